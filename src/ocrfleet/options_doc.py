"""The README's table of `ocrfleet run` options, made from the CLI's own option definitions.

Each option is described once, in cli.py (its flags, default and help line); `--help` and
the README both show that description, and a test fails when the README's table is not the
one this module makes. Rewrite it with `python -m ocrfleet.options_doc README.md`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

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


def run_parser() -> argparse.ArgumentParser:
    from .cli import build_parser

    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found: argparse.ArgumentParser = action.choices["run"]
            return found
    raise LookupError("ocrfleet has no run command")


def readme_with_table(readme: str) -> str:
    """The README with its options table replaced by the one made from cli.py."""
    head, sep, rest = readme.partition(BEGIN)
    _, sep2, tail = rest.partition(END)
    if not sep or not sep2:
        raise ValueError(f"the README has no {BEGIN!r} … {END!r} block")
    return f"{head}{BEGIN}\n\n{options_table(run_parser())}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    path = Path((argv or sys.argv[1:] or ["README.md"])[0])
    path.write_text(readme_with_table(path.read_text("utf-8")), "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
