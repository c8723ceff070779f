"""Fast checks of the synthetic DeepSeek-OCR checkpoint: stdlib + pytest only, no vLLM."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ocrfleet.testing.checkpoint import (
    BOS_ID,
    BOS_TOKEN,
    EOS_ID,
    EOS_TOKEN,
    FIRST_FILLER_ID,
    FIRST_PLACEHOLDER_ID,
    IMAGE_TOKEN_ID,
    PAD_ID,
    PAD_TOKEN,
    VOCAB_SIZE,
    CheckpointSize,
    byte_alphabet,
    write_checkpoint,
)

EXPECTED_FILES = {
    "config.json",
    "generation_config.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
}
PUBLISHED_SPECIAL_IDS = {
    "<image>": 128815,
    "<|ref|>": 128816,
    "<|/ref|>": 128817,
    "<|det|>": 128818,
    "<|/det|>": 128819,
    "<|grounding|>": 128820,
    "<td>": 128821,
    "</td>": 128822,
    "<tr>": 128823,
    "</tr>": 128824,
}


def _load_json(path: Path) -> Any:
    """Parse JSON and fail on duplicate object keys, which ``json.load`` silently merges."""

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        unique = dict(pairs)
        assert len(unique) == len(pairs), f"duplicate keys in {path.name}"
        return unique

    with path.open(encoding="utf-8") as handle:
        return json.load(handle, object_pairs_hook=no_duplicates)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("checkpoints")
    return {size: write_checkpoint(root / size, size) for size in ("tiny", "full")}


@pytest.fixture(scope="module")
def tokenizer(checkpoints: dict[str, Path]) -> dict[str, Any]:
    loaded: dict[str, Any] = _load_json(checkpoints["tiny"] / "tokenizer.json")
    return loaded


def _config(checkpoints: dict[str, Path], size: str) -> dict[str, Any]:
    loaded: dict[str, Any] = _load_json(checkpoints[size] / "config.json")
    return loaded


def test_writes_exactly_the_expected_files(checkpoints: dict[str, Path]) -> None:
    for directory in checkpoints.values():
        assert {p.name for p in directory.iterdir()} == EXPECTED_FILES


def test_returns_the_directory_and_creates_parents(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b"
    assert write_checkpoint(target) == target
    assert (target / "config.json").is_file()


@pytest.mark.parametrize("size", ["tiny", "full"])
def test_every_file_is_valid_json(checkpoints: dict[str, Path], size: str) -> None:
    for path in checkpoints[size].iterdir():
        assert isinstance(_load_json(path), dict)


@pytest.mark.parametrize("size", ["tiny", "full"])
def test_config_names_the_ocr_architecture(checkpoints: dict[str, Path], size: str) -> None:
    config = _config(checkpoints, size)
    assert config["architectures"] == ["DeepseekOCRForCausalLM"]
    assert config["model_type"] == "deepseek_vl_v2"
    assert "auto_map" not in config
    assert config["tile_tag"] == "2D"
    assert config["projector_config"]["projector_type"] == "linear"
    assert config["projector_config"]["input_dim"] == 2048
    assert config["language_config"]["architectures"] == ["DeepseekV2ForCausalLM"]


@pytest.mark.parametrize("size", ["tiny", "full"])
def test_vocabulary_is_the_published_size(checkpoints: dict[str, Path], size: str) -> None:
    config = _config(checkpoints, size)
    assert config["vocab_size"] == config["language_config"]["vocab_size"] == VOCAB_SIZE == 129280


@pytest.mark.parametrize("size", ["tiny", "full"])
def test_attention_is_plain_multi_head_with_head_dim_128(
    checkpoints: dict[str, Path], size: str
) -> None:
    language = _config(checkpoints, size)["language_config"]
    assert language["kv_lora_rank"] is None
    assert language["q_lora_rank"] is None
    assert language["use_mla"] is False
    assert language["qk_rope_head_dim"] == language["qk_nope_head_dim"] == 0
    assert language["hidden_size"] // language["num_attention_heads"] == 128
    assert language["hidden_size"] % language["num_attention_heads"] == 0
    assert language["num_key_value_heads"] == language["num_attention_heads"]


@pytest.mark.parametrize("size", ["tiny", "full"])
def test_top_level_repeats_the_language_fields(checkpoints: dict[str, Path], size: str) -> None:
    config = _config(checkpoints, size)
    for key, value in config["language_config"].items():
        if key != "architectures":
            assert config[key] == value, key


@pytest.mark.parametrize("size", ["tiny", "full"])
def test_projector_feeds_the_language_model_width(checkpoints: dict[str, Path], size: str) -> None:
    config = _config(checkpoints, size)
    assert config["projector_config"]["n_embed"] == config["language_config"]["hidden_size"]


def test_tiny_language_model_shape(checkpoints: dict[str, Path]) -> None:
    language = _config(checkpoints, "tiny")["language_config"]
    assert language["hidden_size"] == 256
    assert language["num_attention_heads"] == language["num_key_value_heads"] == 2
    assert language["num_hidden_layers"] == 2
    assert language["first_k_dense_replace"] == 1
    assert language["n_routed_experts"] == 4
    assert language["num_experts_per_tok"] == 2
    assert language["n_shared_experts"] == 1
    assert language["moe_intermediate_size"] == 128
    assert language["intermediate_size"] == 512


def test_full_language_model_is_the_published_one(checkpoints: dict[str, Path]) -> None:
    language = _config(checkpoints, "full")["language_config"]
    published = {
        "hidden_size": 1280,
        "intermediate_size": 6848,
        "moe_intermediate_size": 896,
        "n_routed_experts": 64,
        "n_shared_experts": 2,
        "num_attention_heads": 10,
        "num_key_value_heads": 10,
        "num_experts_per_tok": 6,
        "num_hidden_layers": 12,
        "first_k_dense_replace": 1,
        "max_position_embeddings": 8192,
        "topk_method": "greedy",
        "bos_token_id": 0,
        "eos_token_id": 1,
    }
    assert {key: language[key] for key in published} == published


def test_vision_config_is_the_published_one(checkpoints: dict[str, Path]) -> None:
    vision = _config(checkpoints, "full")["vision_config"]
    assert vision["image_size"] == 1024
    assert vision["model_name"] == "deeplip_b_l"
    assert vision["width"]["sam_vit_b"]["global_attn_indexes"] == [2, 5, 8, 11]
    assert vision["width"]["clip-l-14-224"]["width"] == 1024
    assert _config(checkpoints, "tiny")["vision_config"] == vision


def test_generation_config_ids(checkpoints: dict[str, Path]) -> None:
    generation = _load_json(checkpoints["tiny"] / "generation_config.json")
    assert generation["bos_token_id"] == BOS_ID == 0
    assert generation["eos_token_id"] == EOS_ID == 1


def test_every_id_has_exactly_one_token(tokenizer: dict[str, Any]) -> None:
    vocab: dict[str, int] = tokenizer["model"]["vocab"]
    assert len(vocab) == VOCAB_SIZE
    assert sorted(vocab.values()) == list(range(VOCAB_SIZE))


def test_named_special_tokens(tokenizer: dict[str, Any], checkpoints: dict[str, Path]) -> None:
    vocab: dict[str, int] = tokenizer["model"]["vocab"]
    assert (vocab[BOS_TOKEN], vocab[EOS_TOKEN], vocab[PAD_TOKEN]) == (0, 1, 2)
    assert (BOS_ID, EOS_ID, PAD_ID) == (0, 1, 2)
    config = _load_json(checkpoints["tiny"] / "tokenizer_config.json")
    assert (config["bos_token"], config["eos_token"], config["pad_token"]) == (
        BOS_TOKEN,
        EOS_TOKEN,
        PAD_TOKEN,
    )
    assert _load_json(checkpoints["tiny"] / "special_tokens_map.json")["pad_token"] == PAD_TOKEN


def test_ocr_special_tokens_at_published_ids(tokenizer: dict[str, Any]) -> None:
    vocab: dict[str, int] = tokenizer["model"]["vocab"]
    added = {entry["content"]: entry["id"] for entry in tokenizer["added_tokens"]}
    for content, token_id in PUBLISHED_SPECIAL_IDS.items():
        assert vocab[content] == token_id
        assert added[content] == token_id
    assert IMAGE_TOKEN_ID == 128815


def test_added_tokens_agree_with_the_vocab(tokenizer: dict[str, Any]) -> None:
    vocab: dict[str, int] = tokenizer["model"]["vocab"]
    added = tokenizer["added_tokens"]
    ids = [entry["id"] for entry in added]
    assert ids == sorted(set(ids))
    assert all(vocab[entry["content"]] == entry["id"] for entry in added)
    assert all(entry["special"] and not entry["normalized"] for entry in added)
    placeholders = [entry for entry in added if entry["id"] >= FIRST_PLACEHOLDER_ID]
    assert len(placeholders) == VOCAB_SIZE - FIRST_PLACEHOLDER_ID
    assert all("place▁holder" in entry["content"] for entry in placeholders)


def test_bytes_and_fillers_decode_to_text(tokenizer: dict[str, Any]) -> None:
    """Every non-special token is byte-level text; fillers are whole words after a space."""
    decode_byte = {char: byte for byte, char in enumerate(byte_alphabet())}
    by_id = {token_id: token for token, token_id in tokenizer["model"]["vocab"].items()}
    assert [decode_byte[by_id[3 + byte]] for byte in range(256)] == list(range(256))
    scripts = {"latin": 0, "greek": 0}
    for token_id in range(FIRST_FILLER_ID, IMAGE_TOKEN_ID):
        word = bytes(decode_byte[char] for char in by_id[token_id]).decode("utf-8")
        assert word.startswith(" ") and word[1:].isalpha(), (token_id, word)
        scripts["greek" if "α" <= word[1] <= "ω" else "latin"] += 1
    assert min(scripts.values()) > 60000
    assert " data" in {
        bytes(decode_byte[c] for c in by_id[i]).decode("utf-8")
        for i in range(FIRST_FILLER_ID, FIRST_FILLER_ID + 20000)
    }


def test_tokenizer_pipeline_is_byte_level_with_bos(tokenizer: dict[str, Any]) -> None:
    assert tokenizer["pre_tokenizer"]["type"] == "ByteLevel"
    assert tokenizer["decoder"]["type"] == "ByteLevel"
    assert tokenizer["model"]["type"] == "BPE"
    single = tokenizer["post_processor"]["single"]
    assert single[0] == {"SpecialToken": {"id": BOS_TOKEN, "type_id": 0}}


@pytest.mark.parametrize("size", ["tiny", "full"])
def test_output_is_deterministic(tmp_path: Path, size: CheckpointSize) -> None:
    first = write_checkpoint(tmp_path / "first", size)
    second = write_checkpoint(tmp_path / "second", size)
    for name in EXPECTED_FILES:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_sizes_share_the_tokenizer(checkpoints: dict[str, Path]) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        tiny = (checkpoints["tiny"] / name).read_bytes()
        assert tiny == (checkpoints["full"] / name).read_bytes()
