"""An option described once: flags, help, default, choices, and the config layer and field
it sets (`Option`); a parser and config values made from a list of them.

The options of `ocrfleet run` are run_options.RUN_OPTIONS.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

# An option's layer: "run" (RunConfig's own settings), a key of config.LAYERS, or COMMAND: read
# by the command itself (inputs, the output, Ray), not a field of RunConfig.
COMMAND = "command"
RAY_GROUP = "many nodes on Ray (pip install 'ocrfleet[ray]')"
VLLM_GROUP = "vLLM engine"


@dataclass(frozen=True)
class Option:
    """One command-line option and where its value goes."""

    flags: tuple[str, ...]
    help: str
    layer: str
    field: str = ""  # the layer's field; "" means the option's dest
    default: Any = None
    type: Callable[[str], Any] | None = None
    choices: Sequence[Any] | None = None
    action: str | None = None
    metavar: str | None = None
    nargs: str | None = None
    required: bool = False
    group: str = ""  # "" the command's own options, else the title of an option group
    # The parsed value → the field's value (e.g. "auto" → no GPU list).
    convert: Callable[[Any], Any] | None = None

    @property
    def dest(self) -> str:
        long = [f for f in self.flags if f.startswith("--")] or list(self.flags)
        return long[0].lstrip("-").replace("-", "_")

    @property
    def target(self) -> str:
        return self.field or self.dest

    def add_to(self, parser: argparse._ActionsContainer) -> None:
        kw: dict[str, Any] = {"help": self.help}
        if self.action is not None:
            kw["action"] = self.action
        if self.action != "store_true":
            kw["default"] = self.default
            for name in ("type", "choices", "metavar", "nargs"):
                if getattr(self, name) is not None:
                    kw[name] = getattr(self, name)
        elif self.default is not None:
            kw["default"] = self.default
        if self.required:
            kw["required"] = True
        parser.add_argument(*self.flags, **kw)

    def value(self, args: argparse.Namespace) -> Any:
        raw = getattr(args, self.dest)
        return self.convert(raw) if self.convert is not None else raw


def add_options(parser: argparse.ArgumentParser, options: Sequence[Option]) -> None:
    """Add `options` in their order; a group is made where its first option appears."""
    groups: dict[str, argparse._ActionsContainer] = {"": parser}
    for option in options:
        if option.group not in groups:
            groups[option.group] = parser.add_argument_group(option.group)
        option.add_to(groups[option.group])


def layer_values(args: argparse.Namespace, options: Sequence[Option]) -> dict[str, dict[str, Any]]:
    """The parsed values of `options`, by layer then field (COMMAND's included)."""
    out: dict[str, dict[str, Any]] = {}
    for option in options:
        out.setdefault(option.layer, {})[option.target] = option.value(args)
    return out
