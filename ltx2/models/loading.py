"""Loading an official LTX-2 single-file checkpoint onto diffusers components: offline and strict.

How it stays strict: every tensor in the file must land in exactly one parameter or be on
`layout.KNOWN_UNUSED`, and every parameter of every component must come from the file; the error
lists the names either way. How it stays small: components are built on the `meta` device (no
memory), FP8 linears are swapped in before any tensor is read, and tensors are streamed one at a
time from the file (pread, no memory map) straight into their final dtype and device, so the peak
is the loaded model plus one tensor, never a second copy of the transformer.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field

import torch
from diffusers.pipelines.ltx2.vocoder import LTX2VocoderWithBWE

from . import configs, fp8, layout
from .components import COMPONENT_CLASSES, build_empty, component_class, finish_loaded  # noqa: F401 (re-exported)
from .components import target_dtype as _target_dtype
from .configs import CheckpointError
from .safetensors_io import Header, TensorInfo, loading_info_problems, name_list, read_header, read_tensor

log = logging.getLogger("ltx2")

@dataclass
class LoadReport:
    """What was loaded, for the log and /health."""

    path: str
    family: str
    kind: str
    kind_source: str
    fp8_layers: int = 0
    fp8_compute: str | None = None
    tensors_loaded: int = 0
    ignored: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {
            "checkpoint": self.path, "format": "single-file", "family": self.family, "kind": self.kind,
            "kind_source": self.kind_source, "fp8_layers": self.fp8_layers, "fp8_compute": self.fp8_compute,
            "tensors_loaded": self.tensors_loaded, "ignored_tensors": self.ignored,
            "load_seconds": round(self.seconds, 3),
        }


def _metadata_config(header: Header) -> dict:
    path = header.path
    if "config" not in header.metadata:
        raise CheckpointError(f"{path}: no 'config' in the safetensors metadata; official LTX-2 files carry one")
    try:
        return json.loads(header.metadata["config"])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: metadata 'config' is not valid JSON ({exc})") from exc


def checkpoint_family(header: Header) -> str:
    """configs.LTX2 or configs.LTX23, from the file's `config` metadata (refused in one line otherwise)."""
    return configs.detect_family(_metadata_config(header), header.path)


def component_configs(header: Header) -> dict[str, dict]:
    """Every diffusers config, from the file's `config` metadata (and shapes it implies)."""
    path = header.path
    config = _metadata_config(header)
    configs.detect_family(config, path)
    vae = configs.video_vae_config(config)
    if "timestep_conditioning" not in config["vae"]:
        # Older metadata leaves it out; the decoder's timestep embedder in the file says it.
        vae["timestep_conditioning"] = "vae.decoder.last_time_embedder.timestep_embedder.linear_1.weight" in header.tensors
    audio = configs.audio_vae_config(config)
    projection = header.tensors.get(configs.text_projection_key(config))
    return {
        "transformer": configs.transformer_config(config, vae, audio),
        "connectors": configs.connectors_config(config, projection.shape if projection else None),
        "vae": vae,
        "audio_vae": audio,
        "vocoder": configs.vocoder_config(config, audio["mel_bins"]),
    }


def _fp8_layers(header: Header) -> dict[str, bool]:
    """File keys of FP8 linear layers (without `.weight`) -> whether they carry an input scale."""
    found = {}
    for key, info in header.tensors.items():
        # e4m3 is the official format; an e5m2 weight would lose range in e4m3, so it is upcast instead.
        if info.dtype == "F8_E4M3" and key.endswith(".weight"):
            layer = key.removesuffix(".weight")
            found[layer] = f"{layer}.input_scale" in header.tensors
    return found


def load_single_file(
    path: str,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.bfloat16,
    fp8_compute: str = "auto",
    kind: str = "auto",
    homes: dict[str, torch.device] | None = None,
) -> tuple[dict[str, torch.nn.Module], LoadReport]:
    """Load every non-Gemma component of an official LTX-2 single file.

    `dtype` is the compute dtype for every floating tensor except FP8 weights (kept FP8) and their
    scales (kept float32). `device` computes; `homes` says where a component rests if not there
    (a memory policy's offload device). Returns the components (eval mode, no grad) and a report.
    """
    start = time.perf_counter()
    device = torch.device(device)
    header = read_header(path)
    cfgs = component_configs(header)
    family = checkpoint_family(header)
    kind_name, kind_source = configs.detect_kind(path, kind)
    report = LoadReport(path=path, family=family, kind=kind_name, kind_source=kind_source)

    modules = {name: build_empty(name, cfg) for name, cfg in cfgs.items()}
    num_down = len(cfgs["vae"]["block_out_channels"])

    # Which diffusers module each FP8 layer of the file is, then swap those linears before loading.
    fp8_file_layers = _fp8_layers(header)
    compute = fp8.resolve_compute(fp8_compute, device) if fp8_file_layers else None
    owners: dict[str, tuple[str, str]] = {}  # file key -> (component, diffusers key)
    for name, module in modules.items():
        for key in module.state_dict(keep_vars=True):
            owners[layout.file_key(name, key, num_down)] = (name, key)
    swaps: dict[str, dict[str, bool]] = {}  # component -> {diffusers layer: has an input scale}
    for layer, has_input in fp8_file_layers.items():
        owner = owners.get(layer + ".weight")
        if owner is not None:  # (an FP8 tensor nothing owns is reported below as unexpected)
            swaps.setdefault(owner[0], {})[owner[1].removesuffix(".weight")] = has_input
    for name, layers in swaps.items():
        with_input = {layer for layer, has_input in layers.items() if has_input}
        fp8.swap_in_fp8_linears(modules[name], list(layers), compute=compute, has_input_scale=with_input)
        for key in modules[name].state_dict(keep_vars=True):
            owners[layout.file_key(name, key, num_down)] = (name, key)
    report.fp8_layers = sum(len(v) for v in swaps.values())
    report.fp8_compute = compute

    # Strictness: set differences in both directions, with names.
    in_file = set(header.tensors)
    markers = {k for k in in_file if k.endswith(layout.QUANT_MARKER_SUFFIX)
               and k.removesuffix(layout.QUANT_MARKER_SUFFIX) in fp8_file_layers}
    unexpected = in_file - set(owners) - set(layout.KNOWN_UNUSED) - markers
    # An FP8 file may omit the scale of a layer quantised without one: the scale is then 1.
    implied_scales = {k for k in set(owners) - in_file if k.endswith(".weight_scale")
                      and header.tensors.get(k.removesuffix("_scale"), TensorInfo("", (), 0, 0)).dtype.startswith("F8")}
    missing = set(owners) - in_file - implied_scales
    if unexpected or missing:
        parts = []
        if missing:
            parts.append(f"{len(missing)} tensor(s) missing from the file: {name_list(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} tensor(s) in the file that no component owns: {name_list(unexpected)}")
        raise CheckpointError(f"{path}: does not match the {family} layout its config describes; " + "; ".join(parts))
    targets = {name: module.state_dict(keep_vars=True) for name, module in modules.items()}  # meta tensors
    mismatched = []
    for file_key_, (name, key) in owners.items():
        if file_key_ in implied_scales:
            continue
        want = tuple(targets[name][key].shape)
        got = header.tensors[file_key_].shape
        if want != got:
            mismatched.append(f"{file_key_} is {list(got)}, expected {list(want)}")
    if mismatched:
        raise CheckpointError(f"{path}: {len(mismatched)} tensor(s) with the wrong shape: " + "; ".join(sorted(mismatched)[:12]))
    report.ignored = sorted(in_file & set(layout.KNOWN_UNUSED)) + ([f"{len(markers)} *.comfy_quant markers"] if markers else [])

    # Stream: one tensor at a time from the file into its final dtype and device.
    by_component: dict[str, dict[str, torch.Tensor]] = {name: {} for name in modules}
    fd = os.open(path, os.O_RDONLY)
    try:
        for file_key_, (name, key) in owners.items():
            target = targets[name][key]
            if file_key_ in implied_scales:
                tensor = torch.ones((), dtype=torch.float32)
            else:
                tensor = read_tensor(fd, header, file_key_)
            home = (homes or {}).get(name, device)
            # LTX-2.3's vocoder stays float32 whatever `dtype` is: ltx-core runs it in float32 because
            # bfloat16 error through its ~100 chained convolutions degrades the audio measurably.
            wanted = torch.float32 if isinstance(modules[name], LTX2VocoderWithBWE) else dtype
            by_component[name][key] = tensor.to(device=home, dtype=_target_dtype(key, target, wanted))
            del tensor
    finally:
        os.close(fd)
    for name, module in modules.items():
        module.load_state_dict(by_component.pop(name), strict=True, assign=True)
        finish_loaded(name, module, (homes or {}).get(name, device))
    if compute is not None:
        for module in modules.values():
            fp8.set_fp8_compute(module, compute)
    report.tensors_loaded = len(owners) - len(implied_scales)
    report.seconds = time.perf_counter() - start
    log.info("loaded %s (%s %s, %d FP8 layers, %s) in %.1fs", path, report.family, kind_name, report.fp8_layers,
             compute or "no FP8", report.seconds)
    return modules, report


def resolve_checkpoint(name: str, models_dir: str | None) -> str:
    """A `--model` value -> an existing file or directory, or an error saying where we looked."""
    candidates = [name]
    if models_dir and not os.path.isabs(name):
        candidates += [os.path.join(models_dir, name), os.path.join(models_dir, name + ".safetensors")]
    for candidate in candidates:
        if os.path.exists(candidate):
            return candidate
    raise CheckpointError(
        f"model {name!r}: not 'tiny' and no checkpoint at {' or '.join(candidates)}; download the official "
        "files with `ltx2 download`, or point LTX2_MODEL at an LTX-2 .safetensors file or diffusers directory"
    )


def estimated_bytes(header: Header, dtype: torch.dtype) -> dict[str, int]:
    """What each component will occupy once loaded (FP8 stays 1 byte, the rest becomes `dtype`)."""
    sizes: dict[str, int] = {}
    width = torch.tensor([], dtype=dtype).element_size()
    for key, info in header.tensors.items():
        name = layout.component_of(key)
        if name is None or key in layout.KNOWN_UNUSED:
            continue
        count = 1
        for dim in info.shape:
            count *= dim
        per = 1 if info.dtype.startswith("F8") else 4 if key.endswith("_scale") else width
        sizes[name] = sizes.get(name, 0) + count * per
    return sizes


def load_pipeline_components(
    name: str, device: torch.device, dtype: torch.dtype, *, models_dir: str | None, gemma_dir: str | None,
    memory_policy: str = "auto", fp8_compute: str = "auto", variant: str = "auto", text_encoder_dtype: str = "auto",
    upsampler_path: str | None = None, lora_path: str | None = None, parts: dict[str, str | None] | None = None,
) -> tuple[dict, dict, str]:
    """Everything `LTX2Pipeline` needs, loaded where the memory policy wants it to rest.

    The policy, and whether Gemma's linears are stored in FP8, are chosen before anything is
    loaded, from the file's header and Gemma's shard headers: on a 24 GB card, loading everything
    onto the GPU first and offloading afterwards would not fit. Returns (components, report for
    /health, memory policy).
    """
    from . import memory
    from .text_encoder import gemma_linear_elements, load_gemma, quantize_gemma, validate_gemma_dir
    from .tiny import build_scheduler

    path = resolve_checkpoint(name, models_dir)
    from . import split

    if split.is_split_root(path) or (os.path.isfile(path) and _is_ltx25_file(path)) or any((parts or {}).values()):
        return load_split_components(path, device, dtype, parts=parts or {}, memory_policy=memory_policy,
                                     variant=variant, text_encoder_dtype=text_encoder_dtype, fp8_compute=fp8_compute,
                                     tokenizer_dir=gemma_dir)
    if os.path.isdir(path):
        return load_diffusers_dir(path, device, dtype, memory_policy=memory_policy, variant=variant,
                                  text_encoder_dtype=text_encoder_dtype, fp8_compute=fp8_compute)
    header = read_header(path)
    if gemma_dir is None:
        raise CheckpointError(f"{path}: the single-file checkpoint needs Gemma 3: set LTX2_GEMMA_DIR")
    from pathlib import Path

    gemma_files = validate_gemma_dir(Path(gemma_dir))
    sizes = estimated_bytes(header, dtype)
    sizes["text_encoder"] = sum(f.stat().st_size for f in gemma_files) * torch.tensor([], dtype=dtype).element_size() // 2
    if upsampler_path is not None:
        from .upsampler import upsampler_bytes

        sizes["upsampler"] = upsampler_bytes(upsampler_path, dtype)
    # The dev two-stage's distilled LoRA (bound only for a dev checkpoint with the upsampler) rests
    # where the transformer rests.
    if lora_path is not None and upsampler_path is not None and configs.detect_kind(path, variant)[0] == "dev":
        from .lora import lora_bytes

        sizes["transformer"] = sizes.get("transformer", 0) + lora_bytes(lora_path, dtype)
    fp8_sizes = dict(sizes, text_encoder=sizes["text_encoder"] - gemma_linear_elements(gemma_files) * (
        torch.tensor([], dtype=dtype).element_size() - 1))
    free = memory.device_memory(device)[0] if device.type == "cuda" else 0
    workspace = memory.default_workspace_bytes(device)
    te = memory.choose_text_encoder_dtype(text_encoder_dtype, free, sizes, fp8_sizes, workspace, device.type)
    policy, reason = memory.choose_policy(memory_policy, free, fp8_sizes if te["dtype"] == "fp8" else sizes,
                                          workspace, device_type=device.type)
    log.info("memory policy %s; text encoder %s", reason, te["reason"])
    home = {part: device if memory.rests_on_compute(policy, part) else torch.device("cpu")
            for part in (*COMPONENT_CLASSES, "text_encoder")}
    modules, report = load_single_file(path, device=device, dtype=dtype, fp8_compute=fp8_compute, kind=variant,
                                       homes=home)
    text_encoder, tokenizer = load_gemma(gemma_dir, home["text_encoder"], dtype=dtype)
    if te["dtype"] == "fp8":
        te["fp8_layers"] = quantize_gemma(text_encoder, fp8_compute, device)
    components = {**modules, "text_encoder": text_encoder, "tokenizer": tokenizer, "scheduler": build_scheduler()}
    return components, {**report.as_dict(), "gemma_dir": str(gemma_dir), "memory_reason": reason,
                        "text_encoder_dtype": te}, policy


def _is_ltx25_file(path: str) -> bool:
    """An LTX-2.5 part (its transformer, say), from the metadata: 2.5 ships one file per component."""
    from . import split

    header = read_header(path)
    meta = split.transformer_metadata(header)
    config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    return "gemma_config" in header.metadata or configs.is_ltx25(config, meta)


def load_split(paths: dict[str, str | None] | str, device: torch.device | str = "cpu",
               dtype: torch.dtype = torch.bfloat16, *, kind: str = "auto", homes: dict | None = None,
               tokenizer_dir: str | None = None) -> tuple[dict, dict]:
    """LTX-2.5 from its official layout (ltx2.models.split): `paths` is an official-layout directory, a 2.5
    transformer file (its siblings found by the layout), or {transformer, text_encoder, video_vae, audio_vae,
    duration_head} (a directory or transformer under "model", the rest overriding what the layout finds).
    Returns (components incl. text_encoder, tokenizer, diffusion_decoder and duration_head (None when absent),
    report dict)."""
    from . import split

    if isinstance(paths, str):
        paths = {"model": paths}
    paths = dict(paths)
    model = paths.pop("model", None) or paths.get("transformer")
    if model is None:
        raise CheckpointError("LTX-2.5: no transformer file and no model directory given")
    files = split.resolve_files(model, paths, variant=kind)
    modules, report = split.load_split(files, device, dtype, kind=kind, homes=homes, tokenizer_dir=tokenizer_dir)
    return modules, report.as_dict()


def load_split_components(path: str, device: torch.device, dtype: torch.dtype, *, parts: dict, memory_policy: str,
                          variant: str, text_encoder_dtype: str, fp8_compute: str,
                          tokenizer_dir: str | None) -> tuple[dict, dict, str]:
    """`load_pipeline_components` for LTX-2.5's split layout: the memory policy from the files' sizes (bf16 as
    stored), then every part loaded where it rests."""
    from . import memory, split
    from .text_encoder import quantize_gemma
    from .tiny import build_scheduler

    files = split.resolve_files(path, parts, variant=variant)
    size = lambda p: os.path.getsize(p) * torch.tensor([], dtype=dtype).element_size() // 2 if p else 0  # noqa: E731
    sizes = {"transformer": size(files.transformer), "text_encoder": size(files.text_encoder),
             "vae": size(files.conv_vae or files.diffusion_vae), "audio_vae": size(files.audio_vae),
             "diffusion_decoder": size(files.diffusion_vae), "duration_head": size(files.duration_head)}
    free = memory.device_memory(device)[0] if device.type == "cuda" else 0
    workspace = memory.default_workspace_bytes(device)
    # Gemma's decoder linears are most of its file: FP8 halves about that much.
    fp8_sizes = dict(sizes, text_encoder=sizes["text_encoder"] // 2)
    te = memory.choose_text_encoder_dtype(text_encoder_dtype, free, sizes, fp8_sizes, workspace, device.type)
    policy, reason = memory.choose_policy(memory_policy, free, fp8_sizes if te["dtype"] == "fp8" else sizes,
                                          workspace, device_type=device.type)
    log.info("memory policy %s; text encoder %s", reason, te["reason"])
    home = {part: device if memory.rests_on_compute(policy, part) else torch.device("cpu")
            for part in (*COMPONENT_CLASSES, "text_encoder", "diffusion_decoder", "duration_head")}
    modules, report = split.load_split(files, device, dtype, kind=variant, homes=home, tokenizer_dir=tokenizer_dir)
    if te["dtype"] == "fp8":
        te["fp8_layers"] = quantize_gemma(modules["text_encoder"], fp8_compute, device)
    components = {**modules, "scheduler": build_scheduler()}
    return components, {**report.as_dict(), "memory_reason": reason, "text_encoder_dtype": te}, policy


def _check_info(where: str, info: dict) -> None:
    if problems := loading_info_problems(info):
        raise CheckpointError(f"{where}: does not match its config: " + "; ".join(problems))


def load_diffusers_dir(path: str, device: torch.device, dtype: torch.dtype, *, memory_policy: str = "auto",
                       variant: str = "auto", text_encoder_dtype: str = "auto",
                       fp8_compute: str = "auto") -> tuple[dict, dict, str]:
    """A diffusers-format LTX-2 directory (`model_index.json` + one subfolder per component).

    Each component loads with `from_pretrained` offline and is checked as strictly as the single
    file: any missing, unexpected or mis-shaped weight fails with its name.
    """
    from transformers import AutoTokenizer, Gemma3ForConditionalGeneration

    from . import memory
    from .text_encoder import quantize_gemma
    from .tiny import build_scheduler

    index = os.path.join(path, "model_index.json")
    if not os.path.exists(index):
        raise CheckpointError(f"{path}: a directory without model_index.json; expected a diffusers-format LTX-2 pipeline")
    with open(index) as fh:
        declared = json.load(fh)
    wanted = (*COMPONENT_CLASSES, "text_encoder", "tokenizer")
    absent = [n for n in wanted if n not in declared or not os.path.isdir(os.path.join(path, n))]
    if absent:
        raise CheckpointError(f"{path}: model_index.json or the directory lacks {', '.join(absent)}")
    kind_name, kind_source = configs.detect_kind(path, variant)
    if device.type == "cuda" and memory_policy == "auto":
        # No header to size the components from: stage on the CPU, and let the placement pick the
        # policy from the sizes once loaded and move what rests on the GPU there.
        policy, reason, staging = "auto", None, "sequential"
    else:
        policy, reason = memory.choose_policy(memory_policy, 0, {}, 0, device_type=device.type)
        staging = policy
    components: dict = {}
    for name, cls in COMPONENT_CLASSES.items():
        home = device if memory.rests_on_compute(staging, name) else torch.device("cpu")
        try:
            module, info = cls.from_pretrained(path, subfolder=name, torch_dtype=dtype, local_files_only=True,
                                               output_loading_info=True)
        except (OSError, ValueError, RuntimeError) as exc:  # diffusers' words for a bad folder
            raise CheckpointError(f"{os.path.join(path, name)}: cannot be loaded: {exc}") from exc
        _check_info(os.path.join(path, name), info)
        components[name] = module.to(home).eval().requires_grad_(False)
    home = device if memory.rests_on_compute(staging, "text_encoder") else torch.device("cpu")
    text_encoder, info = Gemma3ForConditionalGeneration.from_pretrained(
        os.path.join(path, "text_encoder"), dtype=dtype, device_map={"": home}, local_files_only=True,
        output_loading_info=True,
    )
    _check_info(os.path.join(path, "text_encoder"), info)
    tokenizer = AutoTokenizer.from_pretrained(os.path.join(path, "tokenizer"), local_files_only=True)
    tokenizer.padding_side = "left"
    text_encoder = text_encoder.eval().requires_grad_(False)
    # No header to size Gemma from before loading: FP8 only when asked for.
    te = {"dtype": "bf16", "reason": "a diffusers directory keeps Gemma as stored unless fp8 is requested"}
    if text_encoder_dtype == "fp8":
        te = {"dtype": "fp8", "reason": "fp8: requested", "fp8_layers": quantize_gemma(text_encoder, fp8_compute, device)}
    components.update(text_encoder=text_encoder, tokenizer=tokenizer, scheduler=build_scheduler())
    report = {"checkpoint": path, "format": "diffusers", "family": configs.LTX2_19B, "kind": kind_name,
              "kind_source": kind_source, "memory_reason": reason, "text_encoder_dtype": te}
    return components, report, policy
