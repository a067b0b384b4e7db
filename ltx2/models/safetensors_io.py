"""Reading safetensors files ourselves: the header (checked for truncation before anything is
built) and one tensor at a time with pread. Shared by the checkpoint loader and the Gemma loader,
together with the wording of their loading problems."""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass

import torch

from .configs import CheckpointError

_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
}
_MAX_HEADER = 100 * 1024 * 1024  # the 19B file's header is a few hundred KB

@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


@dataclass
class Header:
    path: str
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    data_start: int = 0  # byte offset of the tensor data (after the 8-byte length and the JSON)


def read_header(path: str) -> Header:
    """Parse and check a safetensors header without reading tensor data.

    A download that stopped early is the common failure: the header is intact but the file is
    shorter than the data it declares. That is caught here, before anything is built.
    """
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: no such file (expected an LTX-2 .safetensors checkpoint; see `ltx2 download`)")
    if os.path.isdir(path):
        raise CheckpointError(f"{path}: is a directory, expected a .safetensors file")
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: {size} bytes, too short to be a safetensors file")
        (length,) = struct.unpack("<Q", head)
        if length > _MAX_HEADER or 8 + length > size:
            raise CheckpointError(
                f"{path}: truncated or not a safetensors file (header declares {length} bytes, file has {size})"
            )
        try:
            raw = json.loads(fh.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{path}: safetensors header is not valid JSON ({exc})") from exc
    metadata = raw.pop("__metadata__", None) or {}
    tensors: dict[str, TensorInfo] = {}
    data_end = 0
    for name, info in raw.items():
        start, end = info["data_offsets"]
        tensors[name] = TensorInfo(info["dtype"], tuple(info["shape"]), start, end)
        data_end = max(data_end, end)
    have = size - 8 - length
    if have < data_end:
        raise CheckpointError(
            f"{path}: truncated: its header declares {data_end} bytes of tensor data but the file holds {have} "
            f"({size} bytes in all); the download is incomplete, fetch it again (ltx2 download)"
        )
    return Header(path=path, tensors=tensors, metadata=metadata, data_start=8 + length)


def read_tensor(fd: int, header: Header, key: str) -> torch.Tensor:
    """One tensor, read with pread into memory of its own.

    Not through a memory map: mapped pages count against the process until the map closes (a
    second copy of the model in RSS while converting), and a parameter that stays a view of the
    map dies with SIGBUS if the file is replaced while serving.
    """
    info = header.tensors[key]
    size = info.end - info.start
    buffer = bytearray(size)
    view, done = memoryview(buffer), 0
    while done < size:
        got = os.preadv(fd, [view[done:]], header.data_start + info.start + done)
        if got <= 0:
            raise CheckpointError(f"{header.path}: could not read {key} (file changed while loading?)")
        done += got
    if size == 0:
        return torch.empty(info.shape, dtype=_DTYPES[info.dtype])
    return torch.frombuffer(buffer, dtype=_DTYPES[info.dtype]).reshape(info.shape)


def name_list(keys, limit: int = 12) -> str:
    """Sorted names, the first `limit` of them, for an error message."""
    keys = sorted(keys)
    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def loading_info_problems(info: dict) -> list[str]:
    """What a diffusers or transformers `output_loading_info` report says went wrong, as sentences.

    Both libraries have already dropped what they legitimately ignore (tied weights such as Gemma's
    `lm_head.weight`, stale buffers); anything left is a real mismatch with the config.
    """
    problems = []
    if info.get("missing_keys"):
        problems.append(f"missing (would be randomly initialised): {name_list(info['missing_keys'])}")
    if info.get("unexpected_keys"):
        problems.append(f"unexpected (not part of the model): {name_list(info['unexpected_keys'])}")
    if info.get("mismatched_keys"):
        shapes = [f"{item[0]} (file {tuple(item[1])}, model {tuple(item[2])})"
                  if isinstance(item, (tuple, list)) and len(item) == 3 else str(item)
                  for item in info["mismatched_keys"]]
        problems.append(f"shape mismatch: {name_list(shapes)}")
    if info.get("error_msgs"):
        problems.append("errors: " + "; ".join(info["error_msgs"]))
    return problems
