"""Memory policies (ltx2.models.memory): the choice from free device memory, the moves each stage makes,
that offloading changes no output, and the report /health carries."""

import itertools
import os

import numpy as np
import pytest
import torch
from torch import nn

from ltx2 import generate, load_model
from ltx2.models import memory
from ltx2.models.memory import (
    STAGES,
    GiB,
    Placement,
    bytes_on,
    choose_policy,
    component_bytes,
    device_memory,
    place,
    resolve_policy,
)

# LTX-2 19B with the FP8 transformer, in bytes. Counted with `component_bytes` on meta-device
# models built from the "2.0" configs in diffusers' scripts/convert_ltx2_to_diffusers.py (Gemma:
# the Gemma 3 12B config, 48 layers x 3840 wide + SigLIP tower, 12.20e9 parameters):
SIZES_19B_FP8 = {
    "text_encoder": 24_405_126_784,  # Gemma 3 12B, bf16
    "connectors": 2_862_950_400,  # 1.43e9 parameters, bf16; they ship in the transformer checkpoint
    "transformer": 19_230_302_720,  # 18.88e9 parameters; the 18.52e9 in block Linears FP8, the rest bf16
    "vae": 2_444_959_202,  # encoder + decoder, bf16 (the decoder alone: 1.06e9 bytes)
    "audio_vae": 106_496_292,  # bf16
    "vocoder": 111_185_604,  # bf16
}
WORKSPACE = memory.GPU_WORKSPACE_BYTES  # 8 GiB
# With those: resident needs 57.7e9 bytes free, offload-text-encoder 51.3e9 (encoding: all but
# Gemma resting + Gemma visiting + 2 GiB), sequential 29.4e9 (its largest stage, the encode).

MiB = 1024**2
CONTEXT = 500 * MiB  # what the CUDA context takes before torch.cuda.mem_get_info answers


def card(total_mib: int, used_by_others: int = 0) -> int:
    """Free bytes on a card whose nvidia-smi total is `total_mib`."""
    return total_mib * MiB - CONTEXT - used_by_others


CARDS = {  # nvidia-smi "Total" memory of each card
    "H100 80GB": card(81559),
    "H100 80GB, 30 GiB held by another process": card(81559, used_by_others=30 * GiB),
    "L40S 48GB": card(46068),
    "RTX 5090 32GB": card(32607),
    "RTX 4090 24GB": card(24564),
}


def sized(nbytes: int) -> nn.Module:
    """A stand-in component of `nbytes` bytes that takes no memory (meta device)."""
    module = nn.Module()
    module.weight = nn.Parameter(torch.empty(nbytes, dtype=torch.uint8, device="meta"), requires_grad=False)
    return module


@pytest.fixture
def real_sized_components():
    return {name: sized(size) for name, size in SIZES_19B_FP8.items()}


@pytest.fixture
def fake_card(monkeypatch):
    """Fake the device query: `fake_card(free)` makes every device report `free` bytes free."""
    def install(free: int) -> None:
        monkeypatch.setattr(memory, "device_memory", lambda device: (free, free + CONTEXT))
    return install


@pytest.mark.parametrize("name, expected, fits", [
    ("H100 80GB", "resident", True),
    ("H100 80GB, 30 GiB held by another process", "offload-text-encoder", True),
    ("L40S 48GB", "sequential", True),
    ("RTX 5090 32GB", "sequential", True),
    ("RTX 4090 24GB", "sequential", False),  # Gemma alone is 24.4e9 bytes: nothing fits
])
def test_auto_policy_from_free_memory(name, expected, fits, fake_card, real_sized_components, caplog):
    fake_card(CARDS[name])
    policy, reason = resolve_policy("auto", real_sized_components, torch.device("cuda"))
    assert policy == expected
    assert reason.startswith(f"{expected}: auto")
    assert ("out-of-memory" in reason or "yet it needs" in reason) is not fits
    assert any(r.levelname == "WARNING" for r in caplog.records) is not fits


def test_thresholds_sit_where_the_sizes_put_them():
    total = sum(SIZES_19B_FP8.values())
    resident_need = total + WORKSPACE
    assert choose_policy("auto", resident_need, SIZES_19B_FP8, WORKSPACE)[0] == "resident"
    assert choose_policy("auto", resident_need - 1, SIZES_19B_FP8, WORKSPACE)[0] == "offload-text-encoder"
    # Under offload-text-encoder the encode is the peak: the rest resident, Gemma visiting, 2 GiB of work.
    encode_need = total + 2 * GiB
    assert choose_policy("auto", encode_need, SIZES_19B_FP8, WORKSPACE)[0] == "offload-text-encoder"
    assert choose_policy("auto", encode_need - 1, SIZES_19B_FP8, WORKSPACE)[0] == "sequential"


@pytest.mark.parametrize("requested", ["resident", "offload-text-encoder", "sequential"])
@pytest.mark.parametrize("name", ["H100 80GB", "RTX 4090 24GB"])
def test_a_named_policy_wins(requested, name, fake_card, real_sized_components, caplog):
    fake_card(CARDS[name])
    policy, reason = resolve_policy(requested, real_sized_components, torch.device("cuda"))
    assert policy == requested
    too_big = name == "RTX 4090 24GB"  # every policy overflows 24 GB; none overflows 80 GB
    assert ("out-of-memory" in reason) is too_big
    assert any(r.levelname == "WARNING" for r in caplog.records) is too_big


def test_cpu_auto_is_resident_and_named_policies_still_apply(fake_card, real_sized_components):
    fake_card(1)  # would force sequential on a GPU
    assert resolve_policy("auto", real_sized_components, torch.device("cpu"))[0] == "resident"
    assert resolve_policy("sequential", real_sized_components, torch.device("cpu"))[0] == "sequential"


def test_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="unknown memory policy"):
        choose_policy("everything-on-the-gpu", 10**12, SIZES_19B_FP8, WORKSPACE)


def test_weights_already_on_the_device_count_as_free():
    tiny = {"a": nn.Linear(4, 4), "b": sized(1000)}  # a on the CPU, b on meta
    assert bytes_on(tiny, torch.device("cpu")) == component_bytes(tiny["a"]) == (16 + 4) * 4
    assert bytes_on(tiny, torch.device("cuda")) == 0


def test_component_bytes_counts_each_tensor_at_its_own_size():
    linear = nn.Linear(64, 32)  # float32 bias: 32 x 4 bytes
    linear.weight = nn.Parameter(linear.weight.detach().to(torch.float8_e4m3fn), requires_grad=False)
    linear.register_buffer("weight_scale", torch.ones((), dtype=torch.float32))
    assert component_bytes(linear) == 64 * 32 * 1 + 32 * 4 + 4
    tied = nn.Sequential(nn.Embedding(10, 8), nn.Linear(8, 10, bias=False))
    tied[1].weight = tied[0].weight  # like Gemma's lm_head and embed_tokens: counted once
    assert component_bytes(tied) == 10 * 8 * 4


def test_device_memory_on_cpu_reads_proc_meminfo():
    free, total = device_memory("cpu")
    assert 0 < free <= total
    assert total == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


# --- moves -------------------------------------------------------------------------------------

# Two-stage (the tiny preset's default): every stage, the upsampler's too, under each policy.
REQUEST = {"prompt": "A cat playing piano, gentle music", "width": 288, "height": 512, "num_frames": 9,
           "num_inference_steps": 2, "seed": 5}


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny", device="cpu")


def run(model, policy: str, request=REQUEST):
    placement = model.placement = place(model.components(), model.device, policy)
    model.speed.pop("prompt_cache", None)  # each run encodes its prompt: the moves of every stage are the subject
    assert not placement.events  # setup() records nothing: events are per request
    return generate(model, request), list(placement.events)


@pytest.fixture(scope="module")
def runs(tiny):
    """One generate() of REQUEST per policy: {policy: (result, events)}."""
    return {policy: run(tiny, policy) for policy in memory.POLICIES}


@pytest.fixture(scope="module")
def resident_result(runs):
    return runs["resident"][0]


def test_sequential_moves_each_component_for_its_stage_only(runs, tiny):
    events = runs["sequential"][1]
    assert events == [
        ("use", "text_encoder"), ("use", "connectors"),
        ("to_compute", "text_encoder"), ("to_compute", "connectors"),
        ("to_offload", "text_encoder"), ("to_offload", "connectors"),
        ("use", "transformer"), ("to_compute", "transformer"), ("to_offload", "transformer"),
        ("use", "upsampler"), ("to_compute", "upsampler"), ("to_offload", "upsampler"),
        ("use", "transformer"), ("to_compute", "transformer"), ("to_offload", "transformer"),
        ("use", "vae"), ("to_compute", "vae"), ("to_offload", "vae"),
        ("use", "audio_vae"), ("use", "vocoder"),
        ("to_compute", "audio_vae"), ("to_compute", "vocoder"),
        ("to_offload", "audio_vae"), ("to_offload", "vocoder"),
    ]
    # The stages' groups are the ones the policy's estimates assume.
    groups = [tuple(name for kind, name in group) for used, group in
              itertools.groupby(events, key=lambda e: e[0] == "use") if used]
    # (Those of the parts this model has: the tiny 19B has no duration head and no diffusion decoder.)
    assert set(groups) == {names for names in STAGES.values() if set(names) <= set(tiny.components())}


def test_offload_text_encoder_moves_only_gemma(runs):
    events = runs["offload-text-encoder"][1]
    moves = [e for e in events if e[0] != "use"]
    assert moves == [("to_compute", "text_encoder"), ("to_offload", "text_encoder")]
    assert events.index(("to_offload", "text_encoder")) < events.index(("use", "transformer"))


def test_resident_moves_nothing(runs):
    events = runs["resident"][1]
    assert events and all(kind == "use" for kind, _ in events)


def test_without_audio_the_vocoder_stays_put(tiny):
    _, events = run(tiny, "sequential", {**REQUEST, "include_audio": False})
    assert ("use", "vocoder") not in events
    assert events[-3:] == [("use", "audio_vae"), ("to_compute", "audio_vae"), ("to_offload", "audio_vae")]


@pytest.mark.parametrize("policy", ["offload-text-encoder", "sequential"])
def test_same_seed_same_output_under_every_policy(runs, resident_result, policy):
    result = runs[policy][0]
    assert np.array_equal(result.frames, resident_result.frames)
    assert np.array_equal(result.waveform, resident_result.waveform)
    assert torch.equal(result.video_latents, resident_result.video_latents)


class PoisonedPlacement(Placement):
    """Offloaded components hold NaN instead of their weights, so any stage that touches one
    outside its `use()` (a forward, or a buffer such as a VAE's latents_mean) turns the output NaN.
    This stands in for the real failure on a GPU: a device mismatch, which a CPU cannot show."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.saved: dict[str, list] = {}

    def _send_off(self, name):
        super()._send_off(name)
        module, saved = self.components[name], []
        for tensor in itertools.chain(module.parameters(), module.buffers()):
            if tensor.is_floating_point():
                saved.append((tensor, tensor.data))
                tensor.data = torch.full_like(tensor.data, float("nan"))
        self.saved[name] = saved

    def _bring(self, name):
        for tensor, data in self.saved.pop(name, []):
            tensor.data = data
        super()._bring(name)


def test_no_stage_touches_an_offloaded_component(resident_result):
    model = load_model("tiny", device="cpu")  # its own: the poison stays in it
    placement = PoisonedPlacement(model.components(), "sequential", "cpu").setup()
    model.placement = placement
    result = generate(model, REQUEST)
    assert np.array_equal(result.frames, resident_result.frames)
    assert np.array_equal(result.waveform, resident_result.waveform)
    # ...and the poison was really in place between stages.
    assert all(torch.isnan(next(m.parameters())).all() for m in placement.components.values())


# --- the host copy: a real move, to the meta device and back -----------------------------------

def test_offloading_returns_to_the_same_host_tensors_with_dtypes_kept():
    embed = nn.Embedding(10, 8)
    head = nn.Linear(8, 10, bias=False)
    head.weight = embed.weight  # tied
    fp8 = nn.Linear(8, 8)
    fp8.weight = nn.Parameter(fp8.weight.detach().to(torch.float8_e4m3fn), requires_grad=False)
    fp8.register_buffer("scale", torch.full((), 0.5))
    module = nn.ModuleDict({"embed": embed, "head": head, "fp8": fp8})
    before = {k: (v.dtype, v.clone()) for k, v in module.state_dict().items()}

    placement = Placement({"part": module}, "sequential", compute_device="meta").setup()
    host_ptrs = {k: v.data_ptr() for k, v in module.state_dict().items()}
    with placement.use("part"):
        assert {v.device.type for v in module.state_dict().values()} == {"meta"}
        assert fp8.weight.dtype == torch.float8_e4m3fn
    after = module.state_dict()
    assert {k: v.data_ptr() for k, v in after.items()} == host_ptrs  # re-pointed, not copied back
    for key, (dtype, value) in before.items():
        assert after[key].dtype == dtype
        assert torch.equal(after[key].float(), value.float())
    assert module["head"].weight is module["embed"].weight  # still tied
    assert placement.events[-1] == ("to_offload", "part")


def test_a_failing_stage_still_sends_its_components_back():
    placement = Placement({"part": nn.Linear(2, 2)}, "sequential", compute_device="meta").setup()
    with pytest.raises(RuntimeError, match="stage failed"), placement.use("part"):
        raise RuntimeError("stage failed")
    assert placement.where("part") == "cpu"
    assert list(placement.events) == [("use", "part"), ("to_compute", "part"), ("to_offload", "part")]


def test_nested_use_moves_once():
    placement = Placement({"part": nn.Linear(2, 2)}, "sequential", compute_device="meta").setup()
    with placement.use("part"):
        with placement.use("part"):
            pass
        assert placement.where("part") == "meta"
    assert [e for e in placement.events if e[0] != "use"] == [("to_compute", "part"), ("to_offload", "part")]


# --- /health -----------------------------------------------------------------------------------

def test_health_reports_memory(client, model):
    report = client.get("/health").json()["model"]["memory"]
    assert report["policy"] == "resident"
    assert report["compute_device"] == "cpu"
    assert set(report["components"]) == set(model.components()) <= set(memory.COMPONENTS)
    for name, entry in report["components"].items():
        assert entry == {"bytes": component_bytes(model.components()[name]), "rests_on": "compute", "device": "cpu"}
    assert report["weights_bytes"] == sum(e["bytes"] for e in report["components"].values())
    assert report["device_memory"]["process_rss_bytes"] > report["weights_bytes"]
