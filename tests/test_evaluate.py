"""CER/WER and the Greek normalisations of `ocrfleet eval`."""

from __future__ import annotations

import json
from pathlib import Path

from ocrfleet.evaluate import compare, edit_distance, normalise_relaxed, normalise_strict
from tests.conftest import run_cli


def test_strict_normalisation_folds_greek_lookalikes() -> None:
    tonos, oxia = "\u03ac", "\u1f71"  # ά with tonos, ά with oxia
    assert normalise_strict(f"κ{oxia}τι") == normalise_strict(f"κ{tonos}τι")
    ano_teleia, middle_dot = "\u0387", "\u00b7"
    assert normalise_strict(f"λόγος{ano_teleia}") == normalise_strict(f"λόγος{middle_dot}")
    greek_question = "\u037e"
    assert normalise_strict(f"τι{greek_question}") == "τι;"
    # Strict keeps accents and breathings; only whitespace and Markdown go.
    assert normalise_strict("## Ἐν  ἀρχῇ\n**ἦν**") == "Ἐν ἀρχῇ ἦν"
    assert normalise_strict("<!-- page 1 / 2 -->\n«λέξη» – x") == '"λέξη" - x'


def test_relaxed_normalisation_strips_accents_case_and_final_sigma() -> None:
    assert normalise_relaxed("Ἐν ἀρχῇ ἦν ὁ λόγος") == "εν αρχηι ην ο λογοσ"
    assert normalise_relaxed("ΛΌΓΟΣ") == normalise_relaxed("λόγος")


def test_edit_distance_and_rates() -> None:
    assert edit_distance([], [1, 2]) == 2
    assert edit_distance(list(b"kitten"), list(b"sitting")) == 3
    assert edit_distance(list(b"flaw"), list(b"lawn")) == 2
    scores = compare("Η μελετη εγινε.", "Η μελέτη έγινε.")
    assert scores["strict"].char_errors == 2 and scores["strict"].chars == 15
    assert scores["strict"].wer == round(2 / 3, 4)
    assert scores["relaxed"].cer == 0.0


def test_eval_command(tmp_path: Path) -> None:
    out, truth = tmp_path / "out", tmp_path / "truth"
    (out / "markdown" / "sub").mkdir(parents=True)
    (out / "markdown" / "sub" / "a.md").write_text(
        "<!-- page 1 / 1 -->\n\nΗ μελετη εγινε.\n", "utf-8"
    )
    (truth / "sub").mkdir(parents=True)
    (truth / "sub" / "a.txt").write_text("Η μελέτη έγινε.", "utf-8")
    (truth / "b.txt").write_text("no output for this one", "utf-8")
    result = run_cli("eval", str(out), "--truth", str(truth), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [d["document"] for d in report["documents"]] == ["sub/a"]
    assert report["overall"]["strict"]["char_errors"] == 2
    assert report["overall"]["relaxed"]["cer"] == 0.0
    assert report["missing_outputs"] == ["b"]
    table = run_cli("eval", str(out), "--truth", str(truth))
    assert "overall" in table.stdout and "13.33%" in table.stdout
    bad = run_cli("eval", str(tmp_path / "nothing"), "--truth", str(truth))
    assert bad.returncode == 2 and "no markdown/ directory" in bad.stderr
