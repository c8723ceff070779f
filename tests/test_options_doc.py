"""One description per option: --help and the README's options table show the same text."""

from __future__ import annotations

import argparse

from ocrfleet.options_doc import options_table, readme_with_table, run_parser
from tests.conftest import REPO, run_cli


def test_the_readme_table_is_the_one_made_from_the_cli() -> None:
    readme = (REPO / "README.md").read_text("utf-8")
    assert readme_with_table(readme) == readme, (
        "README.md's options table differs from cli.py: run "
        "`uv run python -m ocrfleet.options_doc README.md`"
    )


def test_every_option_of_every_command_has_a_help_line() -> None:
    from ocrfleet.cli import build_parser

    parser = build_parser()
    bare = [
        f"{name} {action.option_strings or action.dest}"
        for sub in parser._actions
        if isinstance(sub, argparse._SubParsersAction)
        for name, command in sub.choices.items()
        for action in command._actions
        if not action.help
    ]
    assert bare == []


def test_help_shows_real_defaults_and_no_noise() -> None:
    help_text = run_cli("run", "--help").stdout
    assert "(default: None)" not in help_text and "(default: [])" not in help_text
    assert "(default: False)" not in help_text
    flat = " ".join(help_text.split())
    assert "(default: 144)" in flat and "(default: auto)" in flat and "(default: 0)" in flat
    # argparse wraps lines, at hyphens too: compare without white space.
    dense = "".join(help_text.split())
    table = options_table(run_parser())
    # Each option's help line is in --help and in the table, word for word.
    for action in run_parser()._actions:
        if action.help and action.option_strings and action.option_strings != ["-h", "--help"]:
            assert "".join(action.help.split()) in dense, action.option_strings
            assert " ".join(action.help.split()).replace("|", "\\|") in table, action.option_strings
