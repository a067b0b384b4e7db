"""LoRA adapters: read a LoRA file in any of the key styles people share, bind it to the loaded
model's layers, and run it as a low-rank side path next to each layer it adapts.

Key styles (all map through `layout.file_key`, the loader's own name table):

- Lightricks' trainer and ComfyUI: `diffusion_model.<ltx-core name>.lora_A.weight` / `.lora_B.weight`
  (ltx-core names, as in the official checkpoint; `lora_down` / `lora_up` and a `.alpha` too);
  `text_embedding_projection.*` for the text projection.
- Kohya / older ComfyUI: `lora_unet_<ltx-core name with _ for .>.lora_down.weight` / `.lora_up.weight`
  / `.alpha`.
- diffusers / PEFT: `transformer.<diffusers name>.lora_A.weight` (or `connectors.`, or PEFT's
  `base_model.model.`), with `lora_alpha` and `r` in diffusers' `lora_adapter_metadata`.

The update of a layer is `scale * (alpha / rank) * B @ A`; with no alpha given it is `scale * B @ A`,
as ltx-core fuses the trainer's files (which carry none).

Why a side path and not merging into the weights: the transformer's linears are FP8 with one scale
per tensor. Merging means dequantising each adapted weight, adding B @ A and quantising again, per
request, and again to undo it: the requantisation moves every weight of the layer (a new scale), the
LoRA's small delta is mostly below FP8's 3-bit mantissa, and undoing it exactly needs a saved copy of
every adapted weight. The side path leaves the weights alone: `y = W x + (x Aᵀ) Bᵀ` in the compute dtype,
exact for FP8 and bf16 alike, and removing its hooks restores the model bit for bit. Its cost is per
transformer pass and proportional to the rank (bench/bench_lora.py measures both designs).
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..schema import InvalidRequest
from . import layout
from .configs import CheckpointError
from .families import lora_family_problem
from .fp8 import FP8Linear
from .safetensors_io import LayoutError, name_list, read_checked_header, read_header, read_tensor

COMPONENTS = ("transformer", "connectors")  # where LoRAs adapt layers; the VAEs and Gemma are left alone
_LINEAR = (nn.Linear, FP8Linear)
_DOWN = (".lora_A.weight", ".lora_down.weight")
_UP = (".lora_B.weight", ".lora_up.weight")
_ALPHA = ".alpha"
_EXAMPLES = 5  # keys quoted in an error

# Bounds on a LoRA file, all checked from its header before any tensor byte is read (README: LoRAs).
# A LoRA has at most three entries per adapted layer (A, B, alpha); the 19B has ~1,400 linear layers and
# its distilled LoRA's header (rank 384, every layer) is under 1 MB.
MAX_HEADER_BYTES = 4 * 1024 * 1024
MAX_ENTRIES = 16384
MAX_RANK = 1024
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")  # what a factor is stored in; integers and FP8 are refused


class LayerIndex:
    """Every linear layer a LoRA may adapt, under each name a key style can use for it."""

    def __init__(self, pipe) -> None:
        self.modules: dict[tuple[str, str], nn.Module] = {}
        self.by_file: dict[str, tuple[str, str]] = {}  # official file name (no .weight) -> layer
        self.by_kohya: dict[str, tuple[str, str]] = {}  # lora_unet_ name -> layer
        for component in COMPONENTS:
            for name, module in getattr(pipe, component).named_modules():
                if not isinstance(module, _LINEAR):
                    continue
                layer = (component, name)
                self.modules[layer] = module
                official = layout.file_key(component, name + ".weight").removesuffix(".weight")
                self.by_file[official] = layer
                if official.startswith(layout.TRANSFORMER_PREFIX):
                    self.by_kohya[official.removeprefix(layout.TRANSFORMER_PREFIX).replace(".", "_")] = layer

    def resolve(self, stem: str) -> tuple[tuple[str, str] | None, str]:
        """A LoRA key without its .lora_A/.lora_B/.alpha suffix -> (layer or None, the style it is in)."""
        for prefix, style in (("model.diffusion_model.", "ltx"), ("diffusion_model.", "ltx")):
            if stem.startswith(prefix):
                return self.by_file.get(layout.TRANSFORMER_PREFIX + stem.removeprefix(prefix)), style
        if stem.startswith("text_embedding_projection."):
            return self.by_file.get(stem), "ltx"
        if stem.startswith("lora_unet_"):
            return self.by_kohya.get(stem.removeprefix("lora_unet_")), "kohya"
        for prefix, component in (("transformer.", "transformer"), ("connectors.", "connectors"),
                                  ("base_model.model.", "transformer")):
            if stem.startswith(prefix):
                layer = (component, stem.removeprefix(prefix))
                return (layer if layer in self.modules else None), "diffusers"
        layer = ("transformer", stem)  # bare diffusers names, as PEFT saves a model's own adapter
        return (layer if layer in self.modules else None), "diffusers"


def layer_index(model) -> LayerIndex:
    """The model's index, built once (the module tree never changes after loading)."""
    index = getattr(model, "_lora_layer_index", None)
    if index is None:
        index = model._lora_layer_index = LayerIndex(model.pipe)
    return index


@dataclass
class Adapter:
    """One LoRA file bound to the model: per layer, A (rank, in) and B (out, rank) with alpha folded in."""

    name: str
    digest: str
    style: str
    layers: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]]

    @property
    def nbytes(self) -> int:
        return sum(a.numel() * a.element_size() + b.numel() * b.element_size() for a, b in self.layers.values())

    @property
    def components(self) -> set[str]:
        return {component for component, _ in self.layers}

    def report(self, scale: float, stage: str = "all") -> dict:
        """What the response says about this adapter applied at `scale` (`AppliedLora`)."""
        return {"path": self.name, "scale": scale, "layers": len(self.layers), "sha256": self.digest,
                "key_style": self.style, "stage": stage}


def _lora_header(path: str, field: str, label: str, family):
    try:
        header = read_checked_header(path, max_header_bytes=MAX_HEADER_BYTES, max_entries=MAX_ENTRIES,
                                     dtypes=FLOAT_DTYPES)
    except LayoutError as exc:  # its words never hold the server's path: the label is what the user sent
        raise InvalidRequest(field, f"{field}: LoRA {label} is not a readable safetensors file ({exc})") from None
    except OSError as exc:
        raise InvalidRequest(field, f"{field}: LoRA {label} could not be read ({exc.strerror or type(exc).__name__})") \
            from None
    if family is not None and (problem := lora_family_problem(header.tensors, family)) is not None:
        raise InvalidRequest(field, f"{field}: LoRA {label} {problem}")
    return header


def check_lora_family(path: str, field: str, label: str, family) -> None:
    """A LoRA for another model family than `family` is a 422 naming both, from the header's names alone."""
    _lora_header(path, field, label, family)


def check_lora(path: str, field: str, label: str, model):
    """A LoRA file checked from its header alone against the loaded model: its layout and bounds
    (`read_checked_header`), its family, every key on a layer of this model, every pair of factors of
    that layer's shape with a rank of at most min(in, out) and `MAX_RANK`. Returns the header; a
    problem is a 422 naming `field` and `label`, before any tensor is read."""
    header = _lora_header(path, field, label, model.family)
    index = layer_index(model)
    stems, unfit = _stems(header.tensors)
    if not stems and not unfit:
        raise InvalidRequest(field, f"{field}: LoRA {label} holds no tensors")
    seen: dict[tuple[str, str], str] = {}
    wrong_shape, halves = [], []
    for stem, parts in stems.items():
        layer, _ = index.resolve(stem)
        if layer is None:
            unfit.append(parts.get("down") or parts.get("up") or parts["alpha"])
            continue
        if "down" not in parts or "up" not in parts or layer in seen:
            halves.append(stem)
            continue
        seen[layer] = stem
        down, up = header.tensors[parts["down"]], header.tensors[parts["up"]]
        problem = _shape_problem(down.shape, up.shape, True, index.modules[layer], ranked=True)
        if problem is None and "alpha" in parts and math.prod(header.tensors[parts["alpha"]].shape) != 1:
            problem = f"alpha must be one number, got shape {list(header.tensors[parts['alpha']].shape)}"
        if problem:
            wrong_shape.append(f"{stem}: {problem}")
    _refuse(field, label, unfit, wrong_shape, halves)
    return header


def read_lora(path: str, field: str, label: str, family=None, *, model=None, should_stop=None,
              header=None) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A LoRA safetensors file's tensors and metadata; anything unreadable is a 422 naming it, and so is
    a LoRA for another model family than `family`, or with `model`, one that does not fit it
    (`check_lora`): all from the header, before any tensor is read. The tensors then take the file's
    data size in memory, no more. `should_stop()` is asked between tensors: an exception it returns
    is raised."""
    if header is None:
        header = check_lora(path, field, label, model) if model is not None else _lora_header(path, field, label, family)
    tensors = {}
    fd = os.open(path, os.O_RDONLY)
    try:
        for key in header.tensors:
            if should_stop is not None and (why := should_stop()) is not None:
                raise why
            tensors[key] = read_tensor(fd, header, key)
    except CheckpointError:  # the file shrank under us
        raise InvalidRequest(field, f"{field}: LoRA {label} changed while it was read") from None
    finally:
        os.close(fd)
    return tensors, header.metadata


def _stems(keys) -> tuple[dict[str, dict[str, str]], list[str]]:
    """LoRA keys grouped by layer name: {stem: {"down"|"up"|"alpha": key}}, and the keys of no part."""
    stems: dict[str, dict[str, str]] = {}
    unfit = []
    for key in keys:
        found = next(((part, s) for part, suffixes in (("down", _DOWN), ("up", _UP), ("alpha", (_ALPHA,)))
                      for s in suffixes if key.endswith(s)), None)
        if found is None:
            unfit.append(key)
            continue
        stems.setdefault(key.removesuffix(found[1]), {})[found[0]] = key
    return stems, unfit


def _refuse(field: str, label: str, unfit: list, wrong_shape: list, halves: list) -> None:
    if unfit:
        raise InvalidRequest(field, f"{field}: LoRA {label} has {len(unfit)} key(s) that fit no layer of this model "
                                    f"(is it for another model?): {name_list(unfit, _EXAMPLES)}")
    if wrong_shape:
        raise InvalidRequest(field, f"{field}: LoRA {label} has {len(wrong_shape)} layer(s) whose shapes don't fit "
                                    f"this model (a LoRA for another LTX version?): {'; '.join(sorted(wrong_shape)[:_EXAMPLES])}")
    if halves:
        raise InvalidRequest(field, f"{field}: LoRA {label} has {len(halves)} layer(s) without both factors "
                                    f"(lora_A and lora_B) or named twice: {name_list(halves, _EXAMPLES)}")


def bind(model, tensors: dict[str, torch.Tensor], metadata: dict[str, str], *, field: str, label: str,
         digest: str, device: torch.device, dtype: torch.dtype) -> Adapter:
    """Match every key of a LoRA to a layer of this model and check its shapes; all or nothing.

    A key that fits no layer, a layer with only one of its two factors, or a factor of the wrong
    shape (a LoRA for another LTX version) is refused with the keys named: never a partial load.
    """
    index = layer_index(model)
    groups, unfit = _stems(tensors)
    if not groups and not unfit:
        raise InvalidRequest(field, f"{field}: LoRA {label} holds no tensors")
    stems = {stem: {part: tensors[key] for part, key in parts.items()} for stem, parts in groups.items()}
    metadata_factor = _metadata_factor(metadata)
    layers: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}
    styles, wrong_shape, halves = set(), [], []
    for stem, parts in stems.items():
        layer, style = index.resolve(stem)
        if layer is None:
            unfit.append(stem + (".lora_A.weight" if "down" in parts else ".lora_B.weight" if "up" in parts else _ALPHA))
            continue
        styles.add(style)
        if "down" not in parts or "up" not in parts:
            halves.append(stem)
            continue
        down, up = parts["down"], parts["up"]
        module = index.modules[layer]
        problem = _shape_problem(down.shape, up.shape, down.is_floating_point() and up.is_floating_point(), module)
        if problem:
            wrong_shape.append(f"{stem}: {problem}")
            continue
        alpha = parts.get("alpha")
        if alpha is not None and alpha.numel() != 1:
            wrong_shape.append(f"{stem}: alpha must be one number, got shape {list(alpha.shape)}")
            continue
        factor = float(alpha) / down.shape[0] if alpha is not None else metadata_factor
        if not (math.isfinite(factor) and torch.isfinite(down).all() and torch.isfinite(up).all()):
            wrong_shape.append(f"{stem}: holds NaN or infinite values")
            continue
        if layer in layers:  # the same layer under two names: ambiguous, not summed
            halves.append(stem)
            continue
        layers[layer] = (down.to(device=device, dtype=dtype).contiguous(),
                         (up.to(torch.float32) * factor).to(device=device, dtype=dtype).contiguous())
    _refuse(field, label, unfit, wrong_shape, halves)
    if not layers:
        raise InvalidRequest(field, f"{field}: LoRA {label} holds no LoRA layers")
    return Adapter(name=label, digest=digest, style="+".join(sorted(styles)), layers=layers)


def _shape_problem(down: tuple, up: tuple, floating: bool, module: nn.Module, ranked: bool = False) -> str | None:
    """What is wrong with factors of these shapes for `module`, or None (from a header or from tensors).
    `ranked`: a request's LoRA, whose rank is bounded too (not the operator's distilled LoRA)."""
    down, up = tuple(down), tuple(up)
    if len(down) != 2 or len(up) != 2:
        return f"factors must be matrices, got lora_A {list(down)} and lora_B {list(up)}"
    if not floating:
        return "factors must be floating point"
    if down[1] != module.in_features or up[0] != module.out_features or up[1] != down[0]:
        return (f"lora_A {list(down)} and lora_B {list(up)} do not fit a layer of "
                f"{module.in_features} inputs and {module.out_features} outputs")
    rank = down[0]
    if ranked and not 1 <= rank <= min(module.in_features, module.out_features, MAX_RANK):
        return (f"rank {rank} is outside 1..{min(module.in_features, module.out_features, MAX_RANK)} (at most the "
                f"layer's min(inputs, outputs) = {min(module.in_features, module.out_features)}, and at most "
                f"{MAX_RANK})")
    return None


def _metadata_factor(metadata: dict[str, str]) -> float:
    """lora_alpha / r from diffusers' `lora_adapter_metadata` (PEFT's LoraConfig); 1 without it."""
    try:
        config = json.loads(metadata.get("lora_adapter_metadata") or "{}")
        alpha, rank = config.get("transformer.lora_alpha"), config.get("transformer.r")
        return float(alpha) / float(rank) if alpha is not None and rank else 1.0
    except (ValueError, TypeError, AttributeError):
        return 1.0


# ---------------------------------------------------------------------------------------------- cache

class AdapterCache:
    """Bound adapters by content digest, least recently used first out, bounded in bytes.

    Kept where the transformer computes when the memory policy keeps it there (set by the caller's
    `device`), so a repeated LoRA costs neither a file read nor a host-to-device copy.
    """

    def __init__(self, capacity_bytes: int = 4 * 1024**3) -> None:
        self.capacity_bytes = capacity_bytes
        self._items: OrderedDict[tuple, Adapter] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: tuple) -> Adapter | None:
        with self._lock:
            adapter = self._items.get(key)
            if adapter is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return adapter

    def put(self, key: tuple, adapter: Adapter) -> None:
        with self._lock:
            self._items[key] = adapter
            self._items.move_to_end(key)
            while self._items and self.nbytes > self.capacity_bytes and len(self._items) > 1:
                self._items.popitem(last=False)
            if self.nbytes > self.capacity_bytes:  # one adapter larger than the whole cache: used, not kept
                self._items.pop(key, None)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: tuple) -> bool:  # a look that is neither a hit nor a miss
        with self._lock:
            return key in self._items


# ---------------------------------------------------------------------------------------------- applying

@contextmanager
def side_paths(model, adapters: Sequence[tuple[Adapter, float]]) -> Iterator[int]:
    """Add each adapter's low-rank path to the layers it adapts inside the block; yields the layer count.

    Several adapters on one layer become one pair of matmuls (their factors stacked, scales folded
    into A), moved once to the compute device. An adapter at scale 0 adds nothing and is skipped.
    On exit every hook is removed, also when the block fails: the next request sees the model
    exactly as loaded. Side paths nest: an inner block's adapters add to the outer block's (the dev
    two-stage pipeline's distilled LoRA in stage 2, on top of the request's LoRAs).
    """
    index, device = layer_index(model), model.device
    stacked: dict[tuple[str, str], tuple[list, list]] = {}
    for adapter, scale in adapters:
        if scale == 0:
            continue
        for layer, (down, up) in adapter.layers.items():
            downs, ups = stacked.setdefault(layer, ([], []))
            down = down.to(device)
            downs.append(down if scale == 1 else down * scale)  # no copy at 1: the distilled LoRA is 7.4 GB
            ups.append(up.to(device))
    handles = []
    # What the text connectors run with: prompt embeddings made under these are not the bare model's,
    # so anything that caches them must key on this too (empty: the bare connectors).
    outer = getattr(model, "text_adapters", ())  # side paths nest (a stage's LoRA inside the request's)
    model.text_adapters = outer + tuple((a.digest, scale) for a, scale in adapters
                                        if scale != 0 and "connectors" in a.components)
    try:
        for layer, (downs, ups) in stacked.items():
            module = index.modules[layer]
            down = torch.cat(downs) if len(downs) > 1 else downs[0]
            up = torch.cat(ups, dim=1) if len(ups) > 1 else ups[0]
            handles.append(module.register_forward_hook(_hook(down, up)))
        yield len(stacked)
    finally:
        for handle in handles:
            handle.remove()
        model.text_adapters = outer


def _hook(down: torch.Tensor, up: torch.Tensor):
    def add_side_path(module, args, output):
        return output + F.linear(F.linear(args[0].to(down.dtype), down), up).to(output.dtype)

    return add_side_path


# ------------------------------------------------------------------------------------ the distilled LoRA

# The strength ltx-pipelines gives `--distilled-lora` when none is written after the path
# (`DEFAULT_LORA_STRENGTH`); the dev two-stage pipeline applies it to stage 2 only.
DISTILLED_LORA_STRENGTH = 1.0


def resolve_distilled_lora_path(setting: str, models_dir: str | None, official: str | None = None) -> str | None:
    """`--distilled-lora`: "none"; "auto" (the family's `official` file in `<models dir>/loras/`, where
    `ltx2 download --distilled-lora` puts it, or in the models directory itself, if it is there);
    or a path, which must exist."""
    from .configs import CheckpointError
    from .download import DISTILLED_LORA, LORAS_DIR

    official = (official or DISTILLED_LORA).rsplit("/", 1)[-1]  # LTX-2.5 names it inside loras/ already
    if setting == "none":
        return None
    if setting == "auto":
        candidates = [os.path.join(models_dir, LORAS_DIR, official), os.path.join(models_dir, official)] \
            if models_dir else []
        return next((c for c in candidates if os.path.isfile(c)), None)
    candidates = [setting] + ([os.path.join(models_dir, setting)] if models_dir and not os.path.isabs(setting) else [])
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    raise CheckpointError(f"distilled LoRA {setting!r}: no file at {' or '.join(candidates)}; fetch it with "
                          f"`ltx2 download --distilled-lora` ({official}) or set LTX2_DISTILLED_LORA=none "
                          "(a dev checkpoint then runs one stage only)")


def lora_bytes(path: str, dtype: torch.dtype) -> int:
    """What a LoRA file occupies once bound in `dtype`, from its header (for the memory policy)."""
    width = torch.tensor([], dtype=dtype).element_size()
    return sum(math.prod(info.shape) * width for key, info in read_header(path).tensors.items()
               if not key.endswith(_ALPHA))


def file_sha256(path: str) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(8 * 1024 * 1024):
            h.update(chunk)
    return h.hexdigest()


def bind_distilled_lora(model, tensors: dict[str, torch.Tensor], metadata: dict[str, str], *, label: str,
                        digest: str, where: str | None = None) -> Adapter:
    """The distilled LoRA bound once at start-up, where request LoRAs are kept (on the device unless the
    memory policy is sequential). A file that does not fit the checkpoint fails loading, naming it."""
    from .configs import CheckpointError

    home = model.device if model.placement.policy != "sequential" else torch.device("cpu")
    try:
        return bind(model, tensors, metadata, field="distilled_lora", label=label, digest=digest, device=home,
                    dtype=model.dtype)
    except InvalidRequest as exc:
        raise CheckpointError(f"{where or label}: the distilled LoRA does not fit this checkpoint: {exc.message}") \
            from None


def load_distilled_lora(model, path: str) -> Adapter:
    """The official distilled LoRA file (any key style `bind` reads), read and bound to `model`."""
    from .configs import CheckpointError

    try:
        tensors, metadata = read_lora(path, "distilled_lora", path, model.family)
    except InvalidRequest as exc:
        raise CheckpointError(exc.message) from None
    return bind_distilled_lora(model, tensors, metadata, label=os.path.basename(path), digest=file_sha256(path),
                               where=path)
