"""One description per option (options.RUN_OPTIONS) makes --help, the parsed RunConfig and the
README table: an option added to the description shows up in all three."""

from __future__ import annotations

import dataclasses

from ocrfleet.cli import build_parser
from ocrfleet.cli_run import config_from_args
from ocrfleet.config import LAYERS, RunConfig
from ocrfleet.options import COMMAND, Option
from ocrfleet.options_doc import options_table, run_parser
from ocrfleet.run_options import RUN_OPTIONS

# max_image_side is a RunConfig field no option sets yet: the synthetic option adds one.
SYNTHETIC = Option(
    ("--max-image-side",),
    "longest side in pixels of a rendered page",
    "render",
    default=10_000,
    type=int,
)


def test_an_option_added_to_the_description_is_in_help_config_and_readme() -> None:
    options = (*RUN_OPTIONS, SYNTHETIC)
    help_text = run_parser(options).format_help()
    assert "--max-image-side MAX_IMAGE_SIDE" in help_text
    assert "longest side in pixels of a rendered page (default: 10000)" in " ".join(
        help_text.split()
    )
    args = build_parser(options).parse_args(
        ["run", "in/", "-o", "out", "--max-image-side", "4000", "--dpi", "200"]
    )
    config = config_from_args(args, options)
    assert config.render.max_image_side == 4000 and config.render.dpi == 200
    assert config_from_args(build_parser(options).parse_args(["run", "x", "-o", "o"]), options)
    table = options_table(run_parser(options))
    assert "| `--max-image-side MAX_IMAGE_SIDE` | `10000` | longest side in pixels" in table
    # Without the row, nothing knows the option.
    assert "--max-image-side" not in options_table(run_parser())


def test_every_option_names_a_field_of_its_layer() -> None:
    layer_fields = {name: {f.name for f in dataclasses.fields(c)} for name, c in LAYERS.items()}
    layer_fields["run"] = {f.name for f in dataclasses.fields(RunConfig)} - set(LAYERS)
    wrong = [
        (option.flags, option.layer, option.target)
        for option in RUN_OPTIONS
        if option.layer != COMMAND and option.target not in layer_fields[option.layer]
    ]
    assert wrong == []


def test_parsed_values_reach_their_fields() -> None:
    argv = ["run", "a.pdf", "--input-dir", "d", "-o", "out", "--gpus", "0,2", "--no-progress"]
    argv += ["--vllm-arg", "swap_space=4", "--redo-flag", "repetition_loop", "--ngram", "off"]
    argv += ["--engines-per-gpu", "2", "--ocr-engine", "tesseract"]
    config = config_from_args(build_parser().parse_args(argv))
    assert config.inputs == ("d", "a.pdf")
    assert config.fleet.gpus == (0, 2) and config.fleet.engines_per_gpu == 2
    assert config.progress is False and config.policy.redo_flags == ("repetition_loop",)
    assert config.engine.extra_args == {"swap_space": 4} and config.engine.ngram_impl == "off"
    assert config.engine.ocr_engine == "tesseract"
    default = config_from_args(build_parser().parse_args(["run", "x", "-o", "o"]))
    assert default.fleet.gpus == () and default.fleet.engines_per_gpu is None
    assert default.progress is None
    assert default.engine.ocr_engine == "default"
    assert default == RunConfig(inputs=("x",), output_dir=default.output_dir)
