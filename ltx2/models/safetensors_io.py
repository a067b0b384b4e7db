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


class LayoutError(ValueError):
    """What is wrong with an untrusted file's header, in words that do not name its path."""


DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1,
               "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
_MAX_DIMS = 8


def read_checked_header(path: str, *, max_header_bytes: int, max_entries: int, dtypes) -> Header:
    """The header of a file from someone else (a request's LoRA), checked whole before a tensor byte is read.

    The header's length is checked against `max_header_bytes` before any JSON is parsed (parsing
    holds the interpreter lock); then at most `max_entries` tensors, each of a dtype in `dtypes`,
    whose byte ranges lie end to end from the start of the data to the end of the file: none shared,
    none outside, none of another size than its shape and dtype make, no bytes left over. Reading
    every tensor then takes exactly the file's data size in memory, whatever the header says.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise LayoutError(f"{size} bytes, too short to be a safetensors file")
        (length,) = struct.unpack("<Q", head)
        if length > max_header_bytes:
            raise LayoutError(f"its header declares {length} bytes; the limit is {max_header_bytes}")
        if 8 + length > size:
            raise LayoutError(f"truncated: its header declares {length} bytes, the file has {size}")
        text = fh.read(length)
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError) as exc:  # bad UTF-8 or JSON, a number too long to be an int
        raise LayoutError(f"its header is not valid JSON ({str(exc)[:120]})") from None
    if not isinstance(raw, dict):
        raise LayoutError("its header is not a JSON object")
    metadata = raw.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise LayoutError("its __metadata__ must map names to strings")
    if len(raw) > max_entries:
        raise LayoutError(f"{len(raw)} tensors; the limit is {max_entries}")
    tensors: dict[str, TensorInfo] = {}
    for name, info in raw.items():
        tensors[name] = _checked_entry(name, info, dtypes)
    data = size - 8 - length
    at = 0  # sorted by offset, each range must start where the one before ended
    for name, info in sorted(tensors.items(), key=lambda item: (item[1].start, item[1].end)):
        if info.start != at:
            what = "overlaps the tensor before it" if info.start < at else f"leaves bytes {at}..{info.start} unused"
            raise LayoutError(f"tensor {_quote(name)}'s data {what}")
        at = info.end
    if at != data:
        what = "past the end of the file" if at > data else f"{data - at} bytes after the last tensor unused"
        raise LayoutError(f"its tensors' data ends at byte {at} of {data}: {what}")
    return Header(path=path, tensors=tensors, metadata=metadata, data_start=8 + length)


def _checked_entry(name: str, info, dtypes) -> TensorInfo:
    if not isinstance(info, dict):
        raise LayoutError(f"tensor {_quote(name)} is not described by an object")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if dtype not in dtypes:
        raise LayoutError(f"tensor {_quote(name)} has dtype {_quote(str(dtype))}; allowed: {', '.join(dtypes)}")
    if not (isinstance(shape, list) and len(shape) <= _MAX_DIMS
            and all(type(d) is int and d >= 0 for d in shape)):
        raise LayoutError(f"tensor {_quote(name)} has shape {_quote(str(shape))}; expected at most "
                          f"{_MAX_DIMS} non-negative integers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
            and 0 <= offsets[0] <= offsets[1]):
        raise LayoutError(f"tensor {_quote(name)} has data_offsets {_quote(str(offsets))}; expected [start, end]")
    count = 1
    for d in shape:
        count *= d
    if offsets[1] - offsets[0] != count * DTYPE_BYTES[dtype]:
        raise LayoutError(f"tensor {_quote(name)} of shape {shape} and dtype {dtype} needs "
                          f"{count * DTYPE_BYTES[dtype]} bytes but its data_offsets span {offsets[1] - offsets[0]}")
    return TensorInfo(dtype, tuple(shape), offsets[0], offsets[1])


def _quote(text: str, limit: int = 120) -> str:
    """An attacker's name, shortened for an error message."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


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
