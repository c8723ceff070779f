"""The README's table of `ocrfleet run` options, and --help's defaults, from one description.

Each option is described once, in run_options.RUN_OPTIONS (its flags, default and help line);
`--help` and the README both show that description, and a test fails when the README's
table is not the one this module makes. Rewrite it with `python -m ocrfleet.options_doc README.md`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .options import Option

BEGIN = "<!-- options: made by `python -m ocrfleet.options_doc README.md` from cli.py -->"
END = "<!-- options: end -->"


def shown_default(action: argparse.Action) -> str:
    """The default as help shows it; nothing for defaults that say nothing (None, off, [])."""
    default = action.default
    if getattr(action, "required", False) and action.option_strings:
        return "required"
    if default is None or default is False or default == [] or not action.option_strings:
        return ""
    return "" if default == argparse.SUPPRESS else str(default)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Defaults that say something in option help (not None, off or []), the epilog
    (examples, exit statuses) kept as written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        shown = shown_default(action)
        if "%(default)" in text or not shown or shown == "required":
            return text
        return f"{text} (default: %(default)s)"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def options_table(run_parser: argparse.ArgumentParser) -> str:
    """One Markdown table per option group of `ocrfleet run`."""
    out: list[str] = []
    for group in run_parser._action_groups:
        rows = [a for a in group._group_actions if a.help != argparse.SUPPRESS]
        rows = [a for a in rows if not isinstance(a, argparse._HelpAction)]
        if not rows:
            continue
        out += [f"**{group.title}**", "", "| option | default | what it does |", "|---|---|---|"]
        for action in rows:
            flags = ", ".join(action.option_strings) or f"{action.dest.upper()}…"
            if action.option_strings and action.nargs != 0:
                flags += f" {action.metavar or action.dest.upper()}"
            default = shown_default(action)
            help_text = (action.help or "") % {"default": action.default}
            out.append(
                f"| `{_cell(flags)}` | {f'`{_cell(default)}`' if default else ''} | "
                f"{_cell(help_text)} |"
            )
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def run_parser(options: Sequence[Option] | None = None) -> argparse.ArgumentParser:
    """`ocrfleet run`'s parser, made from `options` (default: run_options.RUN_OPTIONS)."""
    from .cli import build_parser

    parser = build_parser() if options is None else build_parser(options)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found: argparse.ArgumentParser = action.choices["run"]
            return found
    raise LookupError("ocrfleet has no run command")


def readme_with_table(readme: str, options: Sequence[Option] | None = None) -> str:
    """The README with its options table replaced by the one made from the options."""
    head, sep, rest = readme.partition(BEGIN)
    _, sep2, tail = rest.partition(END)
    if not sep or not sep2:
        raise ValueError(f"the README has no {BEGIN!r} … {END!r} block")
    return f"{head}{BEGIN}\n\n{options_table(run_parser(options))}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    path = Path((argv or sys.argv[1:] or ["README.md"])[0])
    path.write_text(readme_with_table(path.read_text("utf-8")), "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
