"""What stays on the GPU: a memory policy, chosen once at start-up, and the placement that applies it.

Policies (Settings.memory_policy, env LTX2_MEMORY_POLICY, flag --memory-policy):

- `resident`: every component lives on the compute device; requests move nothing (80 GB cards).
- `offload-text-encoder`: Gemma rests in host RAM and visits the GPU only to encode the prompt.
- `sequential`: every component rests in host RAM and visits the GPU only for its own stage
  (24-48 GB cards).
- `auto`: the first of those that fits the free device memory (`choose_policy`).

Offloaded weights keep one host copy (pinned when the compute device is CUDA), made once at
`setup()`. Moving a component back off the GPU re-points it at that copy instead of copying the
weights back: inference never changes them, so the way back costs nothing.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

log = logging.getLogger("ltx2.memory")

GiB = 1024**3

POLICIES = ("resident", "offload-text-encoder", "sequential")

# The components each stage in `ltx2.pipelines.stages` uses, in order. The policy's size
# estimates read this; the pipeline's `placement.use(...)` calls name the same groups.
STAGES: dict[str, tuple[str, ...]] = {
    "encode_prompt": ("text_encoder", "connectors"),
    "choose_length": ("duration_head",),  # LTX-2.5, a request that leaves the length to the model
    "denoise": ("transformer",),
    "upsample": ("upsampler",),  # two-stage only: the x2 spatial latent upsampler
    "temporal_upsample": ("temporal_upsampler",),  # a request's temporal_upscale: the x2 temporal one
    "decode_video": ("vae",),
    "diffusion_decode": ("diffusion_decoder",),  # LTX-2.5's diffusion decoder, in place of the VAE's
    "decode_audio": ("audio_vae", "vocoder"),
}
COMPONENTS = tuple(name for names in STAGES.values() for name in names)

# Activation memory of one job on top of the weights. The seed worker peaked at ~31 GB with
# ~22 GB of weights resident (transformer 19 GB + VAEs 3 GB): ~9 GB for a full-size video.
GPU_WORKSPACE_BYTES = 8 * GiB
# Encoding needs far less: Gemma's 49 hidden states for 2 x 1024 tokens are ~0.8 GB in bf16,
# held twice while they are stacked, plus the connectors' activations.
ENCODE_WORKSPACE_BYTES = 2 * GiB

EVENT_LIMIT = 1000  # ~18 events a request: the last ~50 requests


def component_bytes(module: nn.Module) -> int:
    """Bytes of a module's parameters and buffers, at each tensor's own element size (FP8: 1)."""
    tensors = list(module.parameters()) + list(module.buffers())  # both skip tied duplicates
    return sum(t.numel() * t.element_size() for t in tensors)


def device_memory(device: torch.device | str) -> tuple[int, int]:
    """(free, total) bytes: CUDA from the driver, CPU from /proc/meminfo (MemAvailable, MemTotal)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        return int(free), int(total)
    if device.type == "cpu":
        info = _read_kib("/proc/meminfo", ("MemAvailable", "MemTotal"))
        return info["MemAvailable"], info["MemTotal"]
    raise ValueError(f"no memory query for device type {device.type!r}")


def default_workspace_bytes(device: torch.device | str) -> int:
    """The activation estimate `choose_policy` reserves: only GPUs need the room planned."""
    return GPU_WORKSPACE_BYTES if torch.device(device).type == "cuda" else 0


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise ValueError(f"unknown memory policy {policy!r}: expected auto or one of {', '.join(POLICIES)}")
    return policy


def rests_on_compute(policy: str, name: str) -> bool:
    """Where a component waits between requests under a policy: on the compute device or off it."""
    if policy == "resident":
        return True
    if policy == "offload-text-encoder":
        return name != "text_encoder"  # the connectors are small next to Gemma: they stay
    check_policy(policy)
    return False  # sequential


def peak_bytes(policy: str, sizes: Mapping[str, int], workspace_bytes: int,
               encode_workspace_bytes: int | None = None) -> int:
    """The most device memory a job needs under a policy: resting weights + a stage's visitors + work."""
    if encode_workspace_bytes is None:
        encode_workspace_bytes = min(workspace_bytes, ENCODE_WORKSPACE_BYTES)
    resting = sum(size for name, size in sizes.items() if rests_on_compute(policy, name))
    peak = resting + workspace_bytes  # denoise and decode with everything resting in place
    for stage, names in STAGES.items():
        visitors = sum(sizes.get(name, 0) for name in names if not rests_on_compute(policy, name))
        work = encode_workspace_bytes if stage == "encode_prompt" else workspace_bytes
        peak = max(peak, resting + visitors + work)
    return peak


def choose_policy(requested: str, free_bytes: int, sizes: Mapping[str, int], workspace_bytes: int, *,
                  device_type: str = "cuda", encode_workspace_bytes: int | None = None) -> tuple[str, str]:
    """(policy, reason). `free_bytes` must count the components already on the device as free.

    `auto` takes the first policy whose peak fits: resident (all weights + workspace), then
    offload-text-encoder (everything but Gemma + workspace, and, while encoding, Gemma on top of
    that), then sequential, the only one left even when its largest stage does not fit. On a CPU
    device `auto` is resident: the weights are in host memory already. A named policy is honoured
    as asked, with a warning when its estimate exceeds the free memory.
    """
    def need(policy: str) -> int:
        return peak_bytes(policy, sizes, workspace_bytes, encode_workspace_bytes)

    def budget(policy: str) -> str:
        return f"needs ~{need(policy) / 1e9:.1f} GB of {free_bytes / 1e9:.1f} GB free"

    if requested != "auto":
        check_policy(requested)
        if device_type == "cuda" and need(requested) > free_bytes:
            reason = f"{requested}: requested; {budget(requested)}, so expect out-of-memory errors"
            log.warning("memory policy %s", reason)
            return requested, reason
        return requested, f"{requested}: requested"
    if device_type != "cuda":
        return "resident", f"resident: auto on {device_type}, where the weights already live in host memory"
    for policy in POLICIES:
        if need(policy) <= free_bytes:
            return policy, f"{policy}: auto, {budget(policy)}"
    reason = f"sequential: auto, the smallest footprint, yet it {budget('sequential')}: expect out-of-memory errors"
    log.warning("memory policy %s", reason)
    return "sequential", reason


def choose_text_encoder_dtype(requested: str, free_bytes: int, sizes: Mapping[str, int],
                              fp8_sizes: Mapping[str, int], workspace_bytes: int, device_type: str = "cuda") -> dict:
    """Gemma's weight dtype: {"dtype": "bf16" | "fp8", "reason": ...}.

    `auto` keeps bf16 unless no memory policy fits with it on this device; then FP8 (about half of
    Gemma's bytes), the only way left to fit, or the closest to fitting when nothing does.
    """
    if requested in ("bf16", "fp8"):
        return {"dtype": requested, "reason": f"{requested}: requested"}
    if requested != "auto":
        raise ValueError(f"LTX2_TEXT_ENCODER_DTYPE / --text-encoder-dtype must be auto, bf16 or fp8; got {requested!r}")
    if device_type != "cuda":
        return {"dtype": "bf16", "reason": f"auto on {device_type}: host memory holds the weights as they are"}
    for policy in POLICIES:
        if peak_bytes(policy, sizes, workspace_bytes) <= free_bytes:
            return {"dtype": "bf16", "reason": f"auto: fits in bf16 ({policy})"}
    need = min(peak_bytes(p, fp8_sizes, workspace_bytes) for p in POLICIES)
    return {"dtype": "fp8", "reason": f"auto: no memory policy fits Gemma in bf16 in {free_bytes / 1e9:.1f} GB free; "
                                      f"with FP8 linears the smallest needs ~{need / 1e9:.1f} GB"}


class _HostCopy:
    """A component's parameters and buffers in host RAM: where it rests when off the compute device.

    Re-pointing the module at these tensors is the whole move back, so each tensor is copied to
    the host once (and pinned, when `pin`, so the copies to the GPU run at full speed).
    """

    def __init__(self, module: nn.Module, pin: bool):
        copies: dict[int, torch.Tensor] = {}  # by original tensor: tied weights share one copy
        self.entries: list[tuple[nn.Module, str, bool, torch.Tensor]] = []
        for sub in module.modules():
            for is_param, table in ((True, sub._parameters), (False, sub._buffers)):
                for key, tensor in table.items():
                    if tensor is None:
                        continue
                    if id(tensor) not in copies:
                        copies[id(tensor)] = _pinned(tensor.detach()) if pin else tensor.detach()
                    self.entries.append((sub, key, is_param, copies[id(tensor)]))

    @torch.no_grad()
    def restore(self) -> None:
        made: dict[int, nn.Parameter] = {}  # one new Parameter per host tensor keeps ties tied
        for sub, key, is_param, host in self.entries:
            if not is_param:
                sub._buffers[key] = host
                continue
            current = sub._parameters[key]
            if current is not None and torch._has_compatible_shallow_copy_type(current, host):
                current.data = host  # keeps the Parameter object: CPU <-> CUDA
            else:  # e.g. back from the meta device: a fresh Parameter on the host tensor
                if id(host) not in made:
                    grad = current is not None and current.requires_grad
                    made[id(host)] = nn.Parameter(host, requires_grad=grad)
                sub._parameters[key] = made[id(host)]


_pin_failed = False


def _pinned(tensor: torch.Tensor) -> torch.Tensor:
    """Page-locked copy of a host tensor; the tensor itself when the system refuses (logged once)."""
    global _pin_failed
    if _pin_failed or tensor.device.type != "cpu":
        return tensor
    try:
        return tensor.pin_memory()
    except RuntimeError as err:
        _pin_failed = True
        log.warning("cannot pin host memory (%s); offloaded weights stay pageable, copies are slower", err)
        return tensor


class Placement:
    """Where each component rests under a policy, and the moves each stage makes.

    `events` records, per `use()`: ("use", name) for every name, then ("to_compute", name) for
    each component it brings over, and on exit ("to_offload", name) for each it sends back. It
    records the policy's moves even when compute and offload device are both the CPU and moving
    is a no-op, so the order is the same, and testable, on any machine.
    """

    def __init__(self, components: Mapping[str, nn.Module], policy: str, compute_device: torch.device | str,
                 offload_device: torch.device | str = "cpu", reason: str = ""):
        check_policy(policy)
        self.components = dict(components)
        self.policy = policy
        self.reason = reason or f"{policy}: requested"
        self.compute_device = torch.device(compute_device)
        self.offload_device = torch.device(offload_device)
        self.events: deque[tuple[str, str]] = deque(maxlen=EVENT_LIMIT)
        self.sizes = {name: component_bytes(module) for name, module in self.components.items()}
        self._on_compute = {name for name in self.components if rests_on_compute(policy, name)}
        self._in_use: dict[str, int] = {}  # nesting depth of use() per component
        # Weight bytes copied host -> device so far (the way back re-points at the host copy: free).
        # A request's share is the difference across it; zero under `resident`.
        self.moved_bytes = 0
        self._host: dict[str, _HostCopy] = {}

    @property
    def _moves(self) -> bool:
        return self.compute_device != self.offload_device

    def setup(self) -> Placement:
        """Put every component where the policy says it rests. Not recorded in `events`."""
        for name, module in self.components.items():
            if rests_on_compute(self.policy, name):
                if self._moves:
                    module.to(self.compute_device)
            else:
                self._send_off(name)
        log.info("memory policy %s; on %s: %s", self.reason, self.compute_device,
                 ", ".join(sorted(self._on_compute)) or "nothing between requests")
        return self

    @contextmanager
    def use(self, *names: str) -> Iterator[None]:
        """Have these components on the compute device inside the block; send back what rests off it."""
        for name in names:
            if name not in self.components:
                raise KeyError(f"no component {name!r}; this placement has {', '.join(self.components)}")
            self.events.append(("use", name))
        for name in names:
            self._in_use[name] = self._in_use.get(name, 0) + 1
        try:
            for name in names:
                if name not in self._on_compute:
                    self._bring(name)
            yield
        finally:  # also when the stage (or a copy) fails: a failed job must not leave Gemma on the GPU
            for name in names:
                self._in_use[name] -= 1
            sent = [name for name in names if not self._in_use[name] and name in self._on_compute
                    and not rests_on_compute(self.policy, name)]
            for name in sent:
                self._send_off(name)
            if sent and self.policy == "sequential" and self.compute_device.type == "cuda":
                torch.cuda.empty_cache()  # give the next stage the freed blocks whole, not fragmented

    def _bring(self, name: str) -> None:
        self.events.append(("to_compute", name))
        self._on_compute.add(name)  # first, so a copy that fails half-way is still sent back
        if self._moves:
            self.moved_bytes += self.sizes[name]
            # non_blocking: from pinned memory the copy overlaps the launch of the stage's first kernels
            self.components[name].to(self.compute_device, non_blocking=True)

    def _send_off(self, name: str) -> None:
        if name in self._on_compute:  # setup() sends off without a matching bring: not a per-request move
            self.events.append(("to_offload", name))
        self._on_compute.discard(name)
        if not self._moves:
            return
        module = self.components[name]
        host = self._host.get(name)
        if host is None:  # first time: this copy is the one every later offload returns to
            module.to(self.offload_device)
            host = self._host[name] = _HostCopy(module, pin=self.compute_device.type == "cuda")
        host.restore()
        module.to(self.offload_device)  # anything created on the device since: moved; the rest: no-op

    def where(self, name: str) -> str:
        """The device a component's weights are on now."""
        for tensor in self.components[name].parameters():
            return str(tensor.device)
        for tensor in self.components[name].buffers():
            return str(tensor.device)
        return "none"

    def memory_report(self) -> dict:
        """For /health: the policy and why, each component's size and place, and the device's use."""
        report: dict = {
            "policy": self.policy,
            "reason": self.reason,
            "compute_device": str(self.compute_device),
            "offload_device": str(self.offload_device),
            "weights_bytes": sum(self.sizes.values()),
            "components": {
                name: {
                    "bytes": size,
                    "rests_on": "compute" if rests_on_compute(self.policy, name) else "offload",
                    "device": self.where(name),
                }
                for name, size in self.sizes.items()
            },
        }
        if self.compute_device.type == "cuda":
            free, total = device_memory(self.compute_device)
            report["device_memory"] = {
                "allocated_bytes": torch.cuda.memory_allocated(self.compute_device),
                "reserved_bytes": torch.cuda.memory_reserved(self.compute_device),
                "free_bytes": free,
                "total_bytes": total,
            }
        else:
            report["device_memory"] = {"process_rss_bytes": process_rss_bytes()}
        return report


def process_rss_bytes() -> int:
    """This process's resident set size, from /proc/self/status (VmRSS)."""
    return _read_kib("/proc/self/status", ("VmRSS",))["VmRSS"]


def _read_kib(path: str, keys: tuple[str, ...]) -> dict[str, int]:
    """Lines like 'MemTotal:  16318480 kB' -> bytes, for the keys asked."""
    found: dict[str, int] = {}
    with open(path) as file:
        for line in file:
            key, _, rest = line.partition(":")
            if key in keys:
                found[key] = int(rest.split()[0]) * 1024
    return found


def pipe_components(pipe) -> dict[str, nn.Module]:
    """The pipeline's weight-carrying components, by the names the stages use."""
    return {name: module for name in COMPONENTS if isinstance(module := getattr(pipe, name, None), nn.Module)}


def resolve_policy(requested: str, components: Mapping[str, nn.Module], device: torch.device,
                   workspace_bytes: int | None = None) -> tuple[str, str]:
    """`choose_policy` with this machine's numbers: the device's free memory plus what the model holds."""
    if device.type != "cuda":  # nothing to budget: auto is resident, a named policy is taken as named
        return choose_policy(requested, 0, {}, 0, device_type=device.type)
    sizes = {name: component_bytes(module) for name, module in components.items()}
    if workspace_bytes is None:
        workspace_bytes = default_workspace_bytes(device)
    free, _ = device_memory(device)
    free += bytes_on(components, device)  # the loader may have put them there: ours to place
    return choose_policy(requested, free, sizes, workspace_bytes, device_type=device.type)


def place(components: Mapping[str, nn.Module], device: torch.device, policy: str = "resident",
          reason: str | None = None, workspace_bytes: int | None = None) -> Placement:
    """Choose (for `auto`) and apply a memory policy to a model's components."""
    if policy == "auto" or reason is None:
        policy, reason = resolve_policy(policy, components, device, workspace_bytes)
    return Placement(components, policy, device, reason=reason).setup()


def bytes_on(components: Mapping[str, nn.Module], device: torch.device) -> int:
    """Bytes of the components whose weights are on `device` now."""
    return sum(component_bytes(module) for module in components.values() if _on_device(module, device))


def _on_device(module: nn.Module, device: torch.device) -> bool:
    for tensor in module.parameters():
        return tensor.device.type == device.type and (device.index is None or tensor.device.index == device.index)
    return False


# ------------------------------------------------------------------------------------------ host memory
# What this process may still allocate on the host: MemAvailable, and every memory cgroup limit above it
# (a container's, RunPod's, a Kubernetes pod's), whichever is tighter. A cgroup's OOM killer acts on its
# own limit long before the machine runs out, so MemAvailable alone would promise memory that isn't there.

UNLIMITED = 1 << 60  # cgroup v1 writes "no limit" as a page-rounded LONG_MAX (9223372036854771712)


@dataclass(frozen=True)
class HostMemory:
    available: int  # bytes
    source: str  # which reading was the tightest, in words


def cgroup_memory(directory: str) -> tuple[int, int] | None:
    """(limit, usage) bytes of one cgroup directory, v2 (memory.max, memory.current) or v1
    (memory.limit_in_bytes, memory.usage_in_bytes); None when it sets no limit or has no such files.
    Usage leaves out the inactive page cache (memory.stat), which the kernel reclaims before it kills."""
    for limit_file, usage_file, inactive_key in (("memory.max", "memory.current", "inactive_file"),
                                                 ("memory.limit_in_bytes", "memory.usage_in_bytes",
                                                  "total_inactive_file")):
        try:
            with open(os.path.join(directory, limit_file)) as file:
                raw_limit = file.read().strip()
            with open(os.path.join(directory, usage_file)) as file:
                usage = int(file.read().strip())
        except (OSError, ValueError):
            continue
        if raw_limit == "max" or int(raw_limit) >= UNLIMITED:
            return None
        return int(raw_limit), max(0, usage - _stat_value(os.path.join(directory, "memory.stat"), inactive_key))
    return None


def _stat_value(path: str, key: str) -> int:
    try:
        with open(path) as file:
            for line in file:
                name, _, value = line.partition(" ")
                if name == key:
                    return int(value)
    except (OSError, ValueError):
        pass
    return 0


def memory_cgroup_dirs(proc_cgroup: str = "/proc/self/cgroup", mountinfo: str = "/proc/self/mountinfo") -> list[str]:
    """This process's memory cgroup directories, its own first, then each parent up to the mount point:
    a parent's limit binds its children too. v2 (the "0::" line, a cgroup2 mount) and v1 (the line
    naming the memory controller, a cgroup mount with the memory option) both."""
    try:
        with open(proc_cgroup) as file:
            lines = file.read().splitlines()
        with open(mountinfo) as file:
            mounts = [line.split() for line in file]
    except OSError:
        return []
    found = []
    for line in lines:
        hierarchy, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        v2 = hierarchy == "0" and controllers == ""
        if not v2 and "memory" not in controllers.split(","):
            continue
        for fields_ in mounts:
            if "-" not in fields_:
                continue
            fstype, options = fields_[fields_.index("-") + 1], fields_[-1].split(",")
            if (v2 and fstype != "cgroup2") or (not v2 and (fstype != "cgroup" or "memory" not in options)):
                continue
            root, mountpoint = fields_[3], fields_[4]
            # Inside a cgroup namespace the mount's root is the process's own cgroup: the path is "/".
            relative = path[len(root):] if path.startswith(root) else ""
            leaf = os.path.normpath(mountpoint + "/" + relative.strip("/"))
            while True:
                if os.path.isdir(leaf) and leaf not in found:
                    found.append(leaf)
                if leaf == mountpoint or len(leaf) <= len(mountpoint):
                    break
                leaf = os.path.dirname(leaf)
            break
    return found


def host_memory(cgroup: str | None = None) -> HostMemory:
    """The host memory this process may still allocate. `cgroup`: one cgroup directory to read instead
    of this process's own (LTX2_MEMORY_CGROUP), or "none" to read MemAvailable alone."""
    available = _read_kib("/proc/meminfo", ("MemAvailable",))["MemAvailable"]
    best = HostMemory(available, f"MemAvailable {available / GiB:.2f} GiB")
    directories = [] if cgroup == "none" else [cgroup] if cgroup else memory_cgroup_dirs()
    for directory in directories:
        reading = cgroup_memory(directory)
        if reading is None:
            continue
        limit, usage = reading
        if limit - usage < best.available:
            best = HostMemory(max(0, limit - usage), f"cgroup {directory}: limit {limit / GiB:.2f} GiB, "
                                                     f"{usage / GiB:.2f} GiB in use")
    return best
