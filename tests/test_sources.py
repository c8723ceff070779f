from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest

from ocrfleet.errors import ConfigError
from ocrfleet.sources import assign_output_paths, discover, probe_all, probe_file
from ocrfleet.testing import samples


def test_directory_is_searched_recursively_and_outputs_mirror_the_tree(tmp_path: Path) -> None:
    samples.text_pdf(tmp_path / "in" / "a" / "report.pdf", ["α"])
    samples.text_pdf(tmp_path / "in" / "b" / "deep" / "report.PDF", ["β"])
    (tmp_path / "in" / "notes.txt").write_text("not a pdf")
    files, missing = discover([str(tmp_path / "in")])
    assert missing == []
    assert [str(f.rel) for f in files] == ["a/report", "b/deep/report"]
    assert files[0].given == str(tmp_path / "in" / "a" / "report.pdf")


def test_glob_and_list_file_inputs(tmp_path: Path) -> None:
    for name in ("x.pdf", "y.pdf", "z.pdf"):
        samples.text_pdf(tmp_path / "d" / name, ["text"])
    files, _ = discover([str(tmp_path / "d" / "[xy].pdf")])
    assert sorted(f.path.name for f in files) == ["x.pdf", "y.pdf"]

    listing = tmp_path / "list.txt"
    listing.write_text("# corpus\nd/z.pdf\n\nd/missing.pdf\n", encoding="utf-8")
    files, missing = discover([str(listing)])
    assert [f.path.name for f in files] == ["z.pdf"]
    tried = tmp_path / "d" / "missing.pdf"  # relative to the list file
    assert missing == [f"d/missing.pdf (listed in {listing}; tried {tried})"]


def test_input_not_found_shows_the_path_tried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    _, missing = discover(["scans/nope.pdf"])
    assert missing == [f"scans/nope.pdf (tried {tmp_path / 'scans' / 'nope.pdf'})"]


def test_missing_input_is_reported_not_fatal(tmp_path: Path) -> None:
    samples.text_pdf(tmp_path / "ok.pdf", ["text"])
    files, missing = discover([str(tmp_path / "ok.pdf"), str(tmp_path / "nope.pdf")])
    assert len(files) == 1 and missing == [str(tmp_path / "nope.pdf")]


def test_binary_non_pdf_named_as_list_is_a_config_error(tmp_path: Path) -> None:
    blob = tmp_path / "blob.bin"
    blob.write_bytes(b"\xff\xfe\x00\x81" * 100)
    with pytest.raises(ConfigError, match=r"blob\.bin"):
        discover([str(blob)])


def test_awkward_names_survive(tmp_path: Path) -> None:
    name = "Έκθεση 'τελική' \"v2\" & σχόλια.pdf"
    samples.text_pdf(tmp_path / name, ["κείμενο"])
    files, _ = discover([str(tmp_path)])
    assert str(files[0].rel) == name[:-4]


def test_output_path_clashes_get_distinct_names() -> None:
    rel = PurePosixPath("a/report")
    names = assign_output_paths([("bbb" * 8, rel), ("aaa" * 8, PurePosixPath("a/Report"))])
    assert names["aaa" * 8] == PurePosixPath("a/Report")
    assert names["bbb" * 8] == PurePosixPath("a/report__" + ("bbb" * 8)[:12])
    # The same set in another order gives the same answer: shards agree.
    again = assign_output_paths([("aaa" * 8, PurePosixPath("a/Report")), ("bbb" * 8, rel)])
    assert again == names


def test_probe_reports_each_kind_of_bad_pdf(tmp_path: Path) -> None:
    empty = tmp_path / "empty.pdf"
    empty.write_bytes(b"")
    cases = {
        empty: "empty file",
        samples.html_pdf(tmp_path / "page.pdf"): "HTML",
        samples.corrupt_pdf(tmp_path / "broken.pdf"): "damaged",
        samples.text_pdf(tmp_path / "locked.pdf", ["x"], password="pw"): "password",
    }
    for path, expected in cases.items():
        probe = probe_file(str(path))
        assert probe.error is not None and expected in probe.error, (path, probe.error)
        assert probe.pages == 0
    good = probe_file(str(samples.text_pdf(tmp_path / "good.pdf", ["a", "b"])))
    assert good.error is None and good.pages == 2 and len(good.doc_id) == 64


def test_content_id_ignores_name_and_place(tmp_path: Path) -> None:
    a = samples.text_pdf(tmp_path / "one.pdf", ["same"])
    b = tmp_path / "elsewhere" / "renamed.pdf"
    b.parent.mkdir()
    b.write_bytes(a.read_bytes())
    assert probe_file(str(a)).doc_id == probe_file(str(b)).doc_id


def test_probe_all_runs_in_processes(tmp_path: Path) -> None:
    paths = [str(samples.text_pdf(tmp_path / f"{i}.pdf", ["p"] * (i + 1))) for i in range(5)]
    probes = probe_all(paths, workers=2)
    assert [probes[p].pages for p in paths] == [1, 2, 3, 4, 5]
