"""Synthetic DeepSeek-OCR checkpoints that the real vLLM engine can load.

The real weights cannot be fetched in CI, but vLLM's ``load_format="dummy"`` fills every
parameter with random values, so a model directory only needs the files vLLM *reads*:
``config.json``, a tokenizer and ``generation_config.json``. This module writes exactly those,
from the Python standard library alone, so that the engine, the multimodal processor, the
n-gram logits processor and the detokenizer all run their real code paths.

Two sizes exist:

* ``full`` is the published DeepSeek-OCR architecture (3B parameters). It is meant for config
  parsing checks and for GPU runs with random weights; it is far too slow for a CPU.
* ``tiny`` keeps the real vision tower (vLLM hard-codes SAM ViT-B and CLIP-L, so it cannot be
  shrunk through the config) but shrinks the DeepseekV2 language model to two layers of width
  256. The attention heads stay 128 wide because vLLM's CPU attention kernel rejects small
  head sizes, hence two heads of 128.

Both sizes keep the full 129,280-token vocabulary: the prompt processor and the model look up
``<image>`` (id 128815) and the grounding/table tokens by their published ids, and a
random-weight model samples ids anywhere in ``[0, vocab_size)``, each of which must embed and
detokenize.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final, Literal

CheckpointSize = Literal["tiny", "full"]
"""``tiny``: two-layer LM for CPU tests; ``full``: the published architecture."""

JSON = dict[str, Any]

VOCAB_SIZE: Final = 129280
"""Published vocabulary size; the same for both sizes so real special-token ids embed."""

BOS_ID: Final = 0
EOS_ID: Final = 1
PAD_ID: Final = 2
BOS_TOKEN: Final = "<｜begin▁of▁sentence｜>"
EOS_TOKEN: Final = "<｜end▁of▁sentence｜>"
PAD_TOKEN: Final = "<｜▁pad▁｜>"

IMAGE_TOKEN_ID: Final = 128815
OCR_SPECIAL_TOKENS: Final[tuple[tuple[int, str], ...]] = (
    (IMAGE_TOKEN_ID, "<image>"),
    (128816, "<|ref|>"),
    (128817, "<|/ref|>"),
    (128818, "<|det|>"),
    (128819, "<|/det|>"),
    (128820, "<|grounding|>"),
    (128821, "<td>"),
    (128822, "</td>"),
    (128823, "<tr>"),
    (128824, "</tr>"),
)
"""DeepSeek-OCR's prompt and output markup tokens at their published ids."""

FIRST_BYTE_ID: Final = 3
"""The 256 byte-level tokens occupy ids 3..258, in byte order."""
FIRST_FILLER_ID: Final = FIRST_BYTE_ID + 256
FIRST_PLACEHOLDER_ID: Final = 128825
"""Ids from here to the end of the vocabulary are ``<｜place▁holder▁no▁ID｜>`` tokens."""

MAX_MODEL_LEN: Final = 8192

PUBLISHED_TRANSFORMERS_VERSION: Final = "4.46.3"
"""As in the published config. transformers 5.x checks it when loading a >100k-token
tokenizer: without a pre-5.0 version next to a non-Mistral model_type it warns that the
tokenizer may carry Mistral's broken pre-tokenizer regex."""

_LATIN_CONSONANTS: Final = "bcdfgklmnprstvz"
_LATIN_VOWELS: Final = "aeiou"
_GREEK_CONSONANTS: Final = "βγδζθκλμνξπρστφχ"
_GREEK_VOWELS: Final = "αεηιουω"

_TINY_LANGUAGE_MODEL: Final = (
    ("hidden_size", 256),
    ("num_attention_heads", 2),
    ("num_key_value_heads", 2),
    ("num_hidden_layers", 2),
    ("first_k_dense_replace", 1),
    ("intermediate_size", 512),
    ("moe_intermediate_size", 128),
    ("n_routed_experts", 4),
    ("num_experts_per_tok", 2),
    ("n_shared_experts", 1),
)
"""Overrides that turn the published LM into the CPU-sized one (layer 0 dense, layer 1 MoE)."""


def write_checkpoint(directory: Path, size: CheckpointSize = "tiny") -> Path:
    """Write a weightless DeepSeek-OCR model directory for ``load_format="dummy"``.

    The files are byte-for-byte deterministic, so callers may cache the directory by size.
    Returns ``directory``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    files: dict[str, JSON] = {
        "config.json": model_config(size),
        "generation_config.json": generation_config(),
        "tokenizer_config.json": tokenizer_config(),
        "special_tokens_map.json": special_tokens_map(),
        "tokenizer.json": tokenizer_json(),
    }
    for name, content in files.items():
        _write_json(directory / name, content, pretty=name != "tokenizer.json")
    return directory


def _write_json(path: Path, content: JSON, *, pretty: bool) -> None:
    """Write UTF-8 JSON; the vocabulary file stays compact because it holds 129k entries."""
    text = json.dumps(content, ensure_ascii=False, indent=2 if pretty else None)
    path.write_text(text + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- config.json


def language_config(size: CheckpointSize) -> JSON:
    """The DeepseekV2 language-model section, published values or the tiny overrides.

    ``kv_lora_rank`` is null and ``use_mla`` false so vLLM builds plain multi-head attention;
    with ``qk_rope_head_dim`` 0 it then derives head_dim as hidden_size / num_attention_heads.
    """
    config: JSON = {
        "architectures": ["DeepseekV2ForCausalLM"],
        "bos_token_id": BOS_ID,
        "eos_token_id": EOS_ID,
        "first_k_dense_replace": 1,
        "hidden_size": 1280,
        "intermediate_size": 6848,
        "kv_lora_rank": None,
        "lm_head": True,
        "max_position_embeddings": MAX_MODEL_LEN,
        "moe_intermediate_size": 896,
        "n_group": 1,
        "n_routed_experts": 64,
        "n_shared_experts": 2,
        "num_attention_heads": 10,
        "num_experts_per_tok": 6,
        "num_hidden_layers": 12,
        "num_key_value_heads": 10,
        "q_lora_rank": None,
        "qk_nope_head_dim": 0,
        "qk_rope_head_dim": 0,
        "rm_head": False,
        "topk_group": 1,
        "topk_method": "greedy",
        "torch_dtype": "bfloat16",
        "use_mla": False,
        "v_head_dim": 0,
        "vocab_size": VOCAB_SIZE,
    }
    if size == "tiny":
        config.update(_TINY_LANGUAGE_MODEL)
    return config


def model_config(size: CheckpointSize) -> JSON:
    """The whole ``config.json``: published vision/projector sections around the LM.

    The published file repeats the LM fields at the top level; we do the same so code that
    reads them from either place agrees. ``auto_map`` is dropped: vLLM ships its own classes.
    The projector maps the 2048-wide vision features onto the LM width, so its ``n_embed``
    follows the LM's hidden size.
    """
    language = language_config(size)
    top_level_lm = {k: v for k, v in language.items() if k not in ("architectures", "torch_dtype")}
    return {
        "architectures": ["DeepseekOCRForCausalLM"],
        "model_type": "deepseek_vl_v2",
        "candidate_resolutions": [[1024, 1024]],
        "global_view_pos": "head",
        "tile_tag": "2D",
        "torch_dtype": "bfloat16",
        "projector_config": {
            "input_dim": 2048,
            "model_type": "mlp_projector",
            "n_embed": language["hidden_size"],
            "projector_type": "linear",
        },
        "vision_config": _vision_config(),
        "language_config": language,
        **top_level_lm,
        "transformers_version": PUBLISHED_TRANSFORMERS_VERSION,
    }


def _vision_config() -> JSON:
    """Published vision section; vLLM hard-codes these towers, the values document them."""
    return {
        "image_size": 1024,
        "mlp_ratio": 3.7362,
        "model_name": "deeplip_b_l",
        "model_type": "vision",
        "width": {
            "clip-l-14-224": {
                "heads": 16,
                "image_size": 224,
                "layers": 24,
                "patch_size": 14,
                "width": 1024,
            },
            "sam_vit_b": {
                "downsample_channels": [512, 1024],
                "global_attn_indexes": [2, 5, 8, 11],
                "heads": 12,
                "layers": 12,
                "width": 768,
            },
        },
    }


def generation_config() -> JSON:
    """Only the bos/eos ids: vLLM reads defaults from here, and we want none beyond these."""
    return {"_from_model_config": True, "bos_token_id": BOS_ID, "eos_token_id": EOS_ID}


# --------------------------------------------------------------------------- tokenizer


def tokenizer_config(tokenizer_class: str = "PreTrainedTokenizerFast") -> JSON:
    """``tokenizer_config.json`` naming a class that uses ``tokenizer.json`` verbatim.

    The published file says ``LlamaTokenizerFast``. Under transformers 5.x that name is an
    alias of ``LlamaTokenizer``, whose constructor rebuilds a SentencePiece-style pipeline
    (Metaspace pre-tokenizer, byte-fallback decoder) from the vocabulary and drops the
    byte-level pre-tokenizer and decoder of ``tokenizer.json``: spaces vanish from encodings.
    ``AutoTokenizer`` in 5.17/5.19 happens to sidestep that for ``model_type``
    ``deepseek_vl_v2`` (it forces ``TokenizersBackend``), but any code that loads the named
    class directly would not. ``PreTrainedTokenizerFast`` (``TokenizersBackend`` in 5.x) reads
    the file verbatim on every path, in transformers 4.x and 5.x alike.
    """
    return {
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "pad_token": PAD_TOKEN,
        "unk_token": None,
        "clean_up_tokenization_spaces": False,
        "legacy": True,
        "model_max_length": MAX_MODEL_LEN,
        "tokenizer_class": tokenizer_class,
    }


def special_tokens_map() -> JSON:
    """The named special tokens, for loaders that read this file instead of the config."""
    return {"bos_token": BOS_TOKEN, "eos_token": EOS_TOKEN, "pad_token": PAD_TOKEN}


def special_tokens() -> list[tuple[int, str]]:
    """Every special token with its id: bos/eos/pad, the OCR markup, the placeholders."""
    named = [(BOS_ID, BOS_TOKEN), (EOS_ID, EOS_TOKEN), (PAD_ID, PAD_TOKEN)]
    placeholders = [
        (token_id, f"<｜place▁holder▁no▁{token_id}｜>")
        for token_id in range(FIRST_PLACEHOLDER_ID, VOCAB_SIZE)
    ]
    return named + list(OCR_SPECIAL_TOKENS) + placeholders


def vocabulary() -> list[str]:
    """Token strings indexed by id, covering every id in ``[0, VOCAB_SIZE)`` exactly once.

    Random weights emit any id, so every id needs a token the detokenizer can render; the
    fillers are byte-level encodings of made-up Latin and Greek words with a leading space so
    random output still reads like (nonsense) multilingual text.
    """
    tokens = [""] * VOCAB_SIZE
    for token_id, content in special_tokens():
        tokens[token_id] = content
    alphabet = byte_alphabet()
    tokens[FIRST_BYTE_ID:FIRST_FILLER_ID] = alphabet
    fillers = _filler_words(IMAGE_TOKEN_ID - FIRST_FILLER_ID)
    tokens[FIRST_FILLER_ID:IMAGE_TOKEN_ID] = [_byte_level(" " + word, alphabet) for word in fillers]
    return tokens


def byte_alphabet() -> list[str]:
    """GPT-2's byte-to-printable-character table, indexed by byte value.

    Byte-level BPE stores tokens as these characters so any byte sequence, including the
    UTF-8 of Greek text, has a printable spelling in the vocabulary.
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    remap = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(remap)) for b in range(256)]


def _byte_level(text: str, alphabet: list[str]) -> str:
    """Spell ``text`` in byte-level characters, as the ByteLevel pre-tokenizer does."""
    return "".join(alphabet[b] for b in text.encode("utf-8"))


def _filler_words(count: int) -> list[str]:
    """``count`` distinct pseudo-words, alternating Latin and Greek.

    Words are two or more consonant-vowel syllables from single-letter alphabets, so every
    spelling parses back to one syllable sequence and no two words collide.
    """
    latin = _words(_LATIN_CONSONANTS, _LATIN_VOWELS)
    greek = _words(_GREEK_CONSONANTS, _GREEK_VOWELS)
    return [next(latin if index % 2 == 0 else greek) for index in range(count)]


def _words(consonants: str, vowels: str) -> Iterator[str]:
    """All words of 2, 3, ... syllables in lexicographic order (an endless stream)."""
    syllables = [c + v for c in consonants for v in vowels]
    for length in itertools.count(2):
        for combination in itertools.product(syllables, repeat=length):
            yield "".join(combination)


def tokenizer_json() -> JSON:
    """A byte-level BPE ``tokenizer.json`` in the ``tokenizers`` library's format.

    There are no merges; ``ignore_merges`` makes a pre-tokenized word that is itself a vocab
    entry (e.g. " data") encode as that one token, and anything else falls back to one token
    per byte, so all text round-trips. A template post-processor prepends bos, matching
    ``add_bos_token`` in the config.
    """
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [_added_token(token_id, content) for token_id, content in special_tokens()],
        "normalizer": None,
        "pre_tokenizer": _byte_level_component(),
        "post_processor": _bos_template(),
        "decoder": _byte_level_component(),
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": True,
            "vocab": {token: token_id for token_id, token in enumerate(vocabulary())},
            "merges": [],
        },
    }


def _added_token(token_id: int, content: str) -> JSON:
    """An ``added_tokens`` entry: matched verbatim before pre-tokenization, never split."""
    return {
        "id": token_id,
        "content": content,
        "single_word": False,
        "lstrip": False,
        "rstrip": False,
        "normalized": False,
        "special": True,
    }


def _byte_level_component() -> JSON:
    """ByteLevel pre-tokenizer/decoder settings (no prefix space: prompts start mid-text)."""
    return {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}


def _bos_template() -> JSON:
    """Post-processor that prepends bos to single sequences and to each half of a pair."""
    bos = {"SpecialToken": {"id": BOS_TOKEN, "type_id": 0}}
    return {
        "type": "TemplateProcessing",
        "single": [bos, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [
            bos,
            {"Sequence": {"id": "A", "type_id": 0}},
            bos,
            {"Sequence": {"id": "B", "type_id": 1}},
        ],
        "special_tokens": {BOS_TOKEN: {"id": BOS_TOKEN, "ids": [BOS_ID], "tokens": [BOS_TOKEN]}},
    }
