"""Load Gemma 3, LTX-2's text encoder, from a local Hugging Face-format directory.

Offline and strict: the directory is checked before anything is loaded (so a bad download fails in
a second with the file named, not after minutes of reading 24 GB), nothing is fetched from a hub,
and every parameter of the model must come from the files: a missing, unexpected or mis-shaped
weight is an error, never a silent random init.

Only the full multimodal checkpoint (`model_type: gemma3`, e.g. gemma-3-12b-it or its
qat-q4_0-unquantized variant) is accepted. diffusers' `LTX2Pipeline` expects
`Gemma3ForConditionalGeneration`, and a text-only `gemma3_text` checkpoint cannot fill that class
without leaving the vision tower and projector randomly initialised, which strict loading forbids.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoTokenizer,
    Gemma3ForConditionalGeneration,
    PreTrainedTokenizerBase,
)

from .configs import CheckpointError
from .fp8 import quantize_linears, resolve_compute
from .safetensors_io import loading_info_problems, name_list, read_header

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")  # fast (tokenizers) or sentencepiece


class GemmaDirError(ValueError):
    """The Gemma directory is not a loadable Gemma 3 checkpoint; the message names path and cause."""


class GemmaFileMissing(GemmaDirError, FileNotFoundError):
    """A directory or file the checkpoint needs is not there."""


def load_gemma(
    path: str | os.PathLike, device: str | torch.device, dtype: torch.dtype = torch.bfloat16
) -> tuple[Gemma3ForConditionalGeneration, PreTrainedTokenizerBase]:
    """Load Gemma 3 and its tokenizer from `path`, offline, straight into `dtype` on `device`."""
    root = Path(path)
    validate_gemma_dir(root)

    # transformers builds the model on the meta device in `dtype`, then materialises each tensor
    # from the memory-mapped safetensors straight onto `device` in `dtype`: no float32 copy and no
    # second CPU copy for GPU loads. `ignore_mismatched_sizes` only turns transformers' own shape
    # error into loading info, so that we raise with the keys named below.
    model, info = Gemma3ForConditionalGeneration.from_pretrained(
        root,
        local_files_only=True,
        use_safetensors=True,
        dtype=dtype,
        device_map={"": torch.device(device)},
        output_loading_info=True,
        ignore_mismatched_sizes=True,
    )
    _check_loading_info(root, info)

    tokenizer = AutoTokenizer.from_pretrained(root, local_files_only=True)
    # LTX2Pipeline forces left padding (and pad = eos if unset) before encoding; do the same here
    # so anyone encoding with this tokenizer directly gets the layout the connectors were fed.
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    model.eval().requires_grad_(False)
    return model, tokenizer


def validate_gemma_dir(root: Path) -> list[Path]:
    """Check layout, config, weight files and tokenizer files; return the weight files."""
    if not root.is_dir():
        raise GemmaFileMissing(f"Gemma directory {root} does not exist (expected a Hugging Face-format Gemma 3 checkpoint)")
    _check_config(root)
    shards = _check_weights(root)
    _check_tokenizer(root)
    return shards


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise GemmaDirError(f"{path} is not valid JSON: {err}") from err


def _check_config(root: Path) -> None:
    path = root / CONFIG
    if not path.is_file():
        raise GemmaFileMissing(f"{path} is missing: a Gemma 3 directory needs its config.json")
    config = _read_json(path)
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type == "gemma3_text":
        raise GemmaDirError(
            f"{path} is a text-only Gemma 3 config (model_type 'gemma3_text'); LTX-2 needs the full "
            "multimodal checkpoint (model_type 'gemma3', Gemma3ForConditionalGeneration), "
            "e.g. google/gemma-3-12b-it"
        )
    if model_type != "gemma3":
        raise GemmaDirError(f"{path} has model_type {model_type!r}; expected 'gemma3' (Gemma 3, e.g. google/gemma-3-12b-it)")


def _check_weights(root: Path) -> list[Path]:
    # Same preference as transformers: a single file wins over a sharded index.
    single, index_path = root / WEIGHTS, root / WEIGHTS_INDEX
    if single.is_file():
        _check_shard(single)
        return [single]
    if not index_path.is_file():
        raise GemmaFileMissing(f"{root} has no weights: expected {WEIGHTS} or {WEIGHTS_INDEX} with its shards")
    index = _read_json(index_path)
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise GemmaDirError(f"{index_path} is not a safetensors index: expected a non-empty 'weight_map'")

    by_shard: dict[str, list[str]] = {}
    for key, shard in weight_map.items():
        by_shard.setdefault(shard, []).append(key)
    absent = sorted(name for name in by_shard if not (root / name).is_file())
    if absent:
        raise GemmaFileMissing(f"{index_path} references shard(s) missing from {root}: {', '.join(absent)}")
    shards = []
    for name, keys in sorted(by_shard.items()):
        stored = _check_shard(root / name)
        lost = sorted(set(keys) - stored)
        if lost:
            raise GemmaDirError(f"{root / name} lacks tensor(s) that {WEIGHTS_INDEX} places there: {name_list(lost)}")
        shards.append(root / name)
    return shards


def _check_shard(path: Path) -> set[str]:
    """Check a shard is exactly as long as its safetensors header declares; return its tensor names.

    Shorter is an interrupted download; longer is a corrupt file.
    """
    try:
        header = read_header(str(path))  # the checkpoint loader's reader: header, and truncation
    except CheckpointError as err:
        raise GemmaDirError(f"shard {err}") from err
    size = path.stat().st_size
    expected = header.data_start + max((t.end for t in header.tensors.values()), default=0)
    if size > expected:
        raise GemmaDirError(f"shard {path} is corrupt: {size} bytes, {size - expected} more than its header declares")
    return set(header.tensors)


def _check_tokenizer(root: Path) -> None:
    if not (root / TOKENIZER_CONFIG).is_file():
        raise GemmaFileMissing(f"{root} has no {TOKENIZER_CONFIG}: the Gemma tokenizer needs it")
    if not any((root / name).is_file() for name in TOKENIZER_FILES):
        raise GemmaFileMissing(f"{root} has no tokenizer vocabulary: expected {' or '.join(TOKENIZER_FILES)}")


def _check_loading_info(root: Path, info: dict) -> None:
    """Refuse any parameter that did not come from the files."""
    if problems := loading_info_problems(info):
        raise GemmaDirError(f"Gemma weights in {root} do not match its config.json; " + "; ".join(problems))


def gemma_linear_names(text_encoder: nn.Module) -> list[str]:
    """Gemma's decoder linears (attention and MLP): what `--text-encoder-dtype fp8` stores in FP8. The
    vision tower, which LTX-2 never runs, and the embedding (tied to the output head) keep their dtype."""
    return [name for name, module in text_encoder.named_modules()
            if isinstance(module, nn.Linear) and ".language_model." in f".{name}" and ".layers." in name]


def quantize_gemma(text_encoder: torch.nn.Module, fp8_compute: str, device: torch.device) -> int:
    """Gemma's decoder linears to FP8, quantized on the compute device; returns how many."""
    names = quantize_linears(text_encoder, gemma_linear_names(text_encoder),
                                 resolve_compute(fp8_compute, device), work_device=device)
    return len(names)


def gemma_linear_elements(shards) -> int:
    """Weights in Gemma's decoder linears (`*_proj.weight` of the language model's layers), from shard headers."""
    total = 0
    for shard in shards:
        for key, info in read_header(str(shard)).tensors.items():
            if "language_model" in key and ".layers." in key and key.endswith("_proj.weight"):
                count = 1
                for dim in info.shape:
                    count *= dim
                total += count
    return total
