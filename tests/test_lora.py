"""LoRAs per request: key styles, the side path, scale 0, composition, cleanliness, refusals, URLs and caches."""

from __future__ import annotations

import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch
from lora_files import STYLES, attention_layers, factors, ltx_name, write_lora

from ltx2 import generate
from ltx2.media.fetch import FetchPolicy
from ltx2.models.fp8 import FP8Linear, quantize_per_tensor
from ltx2.models.lora import Adapter, AdapterCache, bind, layer_index, read_lora, side_paths
from ltx2.pipelines.loras import LoraPolicy, resolve
from ltx2.schema import GenerateRequest, InvalidRequest

CHEAP = {"prompt": "a lighthouse at dusk, waves", "width": 64, "height": 64, "num_frames": 9,
         "num_inference_steps": 2, "seed": 5}


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory, model):
    root = tmp_path_factory.mktemp("models")
    (root / "loras").mkdir()
    write_lora(root / "loras" / "style.safetensors", model, seed=1)
    write_lora(root / "loras" / "other.safetensors", model, seed=2,
               layers=[layer for layer in layer_index(model).modules if layer[0] == "transformer" and ".ff." in layer[1]])
    return root


def policy_for(models_dir, tmp_path, **kw) -> LoraPolicy:
    return LoraPolicy(models_dir=str(models_dir), cache_dir=str(tmp_path / "lora-cache"), **kw)


def run(model, policy, **fields):
    request = GenerateRequest(**{**CHEAP, **fields})
    return generate(model, request, adapters=resolve(model, request, policy))


# ---------------------------------------------------------------------------------------------- key styles

def test_every_key_style_binds_the_same_update(model, tmp_path):
    weights = factors(model, attention_layers(model), rank=4, seed=3)
    bound = {}
    for style in STYLES:
        path = tmp_path / f"{style}.safetensors"
        write_lora(path, style=style, weights=weights, alpha=2.0)  # alpha 2 over rank 4: half the update
        tensors, metadata = read_lora(str(path), "loras.0.path", style)
        bound[style] = bind(model, tensors, metadata, field="loras.0.path", label=style, digest="-",
                            device=torch.device("cpu"), dtype=torch.float32)
    assert {a.style for a in bound.values()} == {"ltx", "kohya", "diffusers"}
    for style, adapter in bound.items():
        assert set(adapter.layers) == set(weights), style
        for layer, (down, up) in weights.items():
            got_down, got_up = adapter.layers[layer]
            assert torch.equal(got_down, down.to(torch.bfloat16).float()), (style, layer)
            assert torch.allclose(got_up, up.to(torch.bfloat16).float() * 0.5), (style, layer)


@pytest.mark.parametrize("stem, layer", [
    ("diffusion_model.patchify_proj", ("transformer", "proj_in")),
    ("diffusion_model.adaln_single.linear", ("transformer", "time_embed.linear")),
    ("diffusion_model.av_ca_a2v_gate_adaln_single.linear", ("transformer", "av_cross_attn_video_a2v_gate.linear")),
    ("diffusion_model.transformer_blocks.1.audio_ff.net.2", ("transformer", "transformer_blocks.1.audio_ff.net.2")),
    ("lora_unet_transformer_blocks_0_audio_to_video_attn_to_out_0",
     ("transformer", "transformer_blocks.0.audio_to_video_attn.to_out.0")),
    ("text_embedding_projection.aggregate_embed", ("connectors", "text_proj_in")),
    ("diffusion_model.video_embeddings_connector.transformer_1d_blocks.0.attn1.to_q",
     ("connectors", "video_connector.transformer_blocks.0.attn1.to_q")),
    ("transformer.transformer_blocks.0.attn2.to_k", ("transformer", "transformer_blocks.0.attn2.to_k")),
    ("base_model.model.proj_out", ("transformer", "proj_out")),
])
def test_official_and_diffusers_names_reach_the_right_layer(model, stem, layer):
    assert layer_index(model).resolve(stem)[0] == layer


# ---------------------------------------------------------------------------------------------- the side path

@pytest.mark.parametrize("kind", ["linear", "fp8"])
def test_side_path_is_the_low_rank_update_and_leaves_the_weights_alone(kind):
    torch.manual_seed(0)
    dense = torch.nn.Linear(48, 32)
    layer = dense
    if kind == "fp8":
        layer = FP8Linear(48, 32, bias=True, has_input_scale=False, bias_dtype=torch.float32)
        q, scale = quantize_per_tensor(dense.weight)
        layer.load_state_dict({"weight": q, "weight_scale": scale, "bias": dense.bias.detach()})
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    down, up = torch.randn(4, 48) * 0.1, torch.randn(32, 4) * 0.1

    class Model:
        device = torch.device("cpu")
        _lora_layer_index = type("Index", (), {"modules": {("transformer", "x"): layer}})()

    x = torch.randn(5, 48)
    plain = layer(x)
    with torch.no_grad(), side_paths(Model, [(Adapter("a", "-", "ltx", {("transformer", "x"): (down, up)}), 0.7)]):
        adapted = layer(x)
    assert torch.allclose(adapted, plain + 0.7 * x @ (up @ down).T, atol=1e-5)
    assert torch.equal(layer(x), plain)  # the hook is gone
    assert not layer._forward_hooks
    assert all(torch.equal(before[k].reshape(-1).view(torch.uint8), v.reshape(-1).view(torch.uint8))
               for k, v in layer.state_dict().items())


def test_a_lora_changes_the_video_and_scale_zero_is_the_bare_model(model, models_dir, tmp_path):
    policy = policy_for(models_dir, tmp_path)
    bare = run(model, policy)
    styled = run(model, policy, loras=[{"path": "style.safetensors", "scale": 1.0}])
    zero = run(model, policy, loras=[{"path": "style.safetensors", "scale": 0.0}])
    after = run(model, policy)  # nothing left behind by the LoRA requests
    assert not np.array_equal(styled.frames, bare.frames)
    assert not torch.equal(styled.audio_latents, bare.audio_latents)
    assert np.array_equal(zero.frames, bare.frames) and np.array_equal(zero.waveform, bare.waveform)
    assert np.array_equal(after.frames, bare.frames) and np.array_equal(after.waveform, bare.waveform)
    assert styled.loras == [{"path": "style.safetensors", "scale": 1.0, "layers": len(attention_layers(model)),
                             "sha256": styled.loras[0]["sha256"], "key_style": "ltx", "stage": "all"}]
    assert len(styled.loras[0]["sha256"]) == 64
    assert not any(m._forward_hooks for m in layer_index(model).modules.values())


def test_two_loras_compose_into_their_sum(model, models_dir, tmp_path):
    a = factors(model, attention_layers(model), seed=11)
    b = factors(model, attention_layers(model), seed=12)
    loras = tmp_path / "models" / "loras"
    loras.mkdir(parents=True)
    write_lora(loras / "a.safetensors", weights=a)
    write_lora(loras / "b.safetensors", weights=b)
    # One file holding both: A stacked on A, B beside B; the same update as the two applied together.
    both = {layer: (torch.cat([a[layer][0], b[layer][0]]), torch.cat([a[layer][1], b[layer][1]], dim=1)) for layer in a}
    write_lora(loras / "both.safetensors", weights=both)
    policy = policy_for(tmp_path / "models", tmp_path)
    pair = run(model, policy, loras=[{"path": "a"}, {"path": "b"}])
    single = run(model, policy, loras=[{"path": "both"}])
    only_a = run(model, policy, loras=[{"path": "a"}])
    assert np.array_equal(pair.frames, single.frames)
    assert not np.array_equal(pair.frames, only_a.frames)
    assert [item["path"] for item in pair.loras] == ["a", "b"]


# ---------------------------------------------------------------------------------------------- refusals

def refusal(model, policy, path, field="loras.0.path") -> str:
    request = GenerateRequest(**CHEAP, loras=[{"path": path}])
    with pytest.raises(InvalidRequest) as caught:
        resolve(model, request, policy)
    assert caught.value.field == field and caught.value.status == 422
    return caught.value.message


def test_malformed_and_mismatched_loras_are_422s_naming_them(model, tmp_path):
    loras = tmp_path / "models" / "loras"
    loras.mkdir(parents=True)
    (loras / "junk.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    write_lora(loras / "foreign.safetensors", weights={}, extra={
        "diffusion_model.transformer_blocks.47.attn1.to_q.lora_A.weight": torch.zeros(4, 32),
        "diffusion_model.transformer_blocks.47.attn1.to_q.lora_B.weight": torch.zeros(32, 4)})
    wide = {layer: (torch.zeros(4, 4096), torch.zeros(4096, 4)) for layer in attention_layers(model)}
    write_lora(loras / "wide.safetensors", weights=wide)
    first = attention_layers(model)[0]
    bad = factors(model, [first])
    write_lora(loras / "nan.safetensors", weights={first: (bad[first][0] * float("nan"), bad[first][1])})
    write_lora(loras / "alphas.safetensors", weights=bad,
               extra={ltx_name(*first) + ".alpha": torch.ones(3)})
    half = factors(model, attention_layers(model)[:1])
    write_lora(loras / "half.safetensors", weights={}, extra={
        ltx_name(*attention_layers(model)[0]) + ".lora_A.weight": half[attention_layers(model)[0]][0].contiguous()})
    policy = policy_for(tmp_path / "models", tmp_path)
    cached = len(model.adapter_cache)
    assert "junk.safetensors is not a readable safetensors file" in refusal(model, policy, "junk.safetensors")
    message = refusal(model, policy, "foreign")
    assert "fit no layer" in message and "transformer_blocks.47.attn1.to_q" in message and "foreign" in message
    message = refusal(model, policy, "wide")
    assert "shapes don't fit" in message and "4096" in message and "attn1.to_q" in message
    assert "without both factors" in refusal(model, policy, "half")
    assert "NaN or infinite" in refusal(model, policy, "nan")
    assert "alpha must be one number" in refusal(model, policy, "alphas")
    assert len(model.adapter_cache) == cached  # nothing of a refused LoRA is kept


def test_paths_stay_inside_the_lora_directory(model, tmp_path):
    loras = tmp_path / "models" / "loras"
    loras.mkdir(parents=True)
    outside = tmp_path / "secret.safetensors"
    write_lora(outside, model)
    os.symlink(outside, loras / "link.safetensors")
    policy = policy_for(tmp_path / "models", tmp_path)
    assert "'..'" in refusal(model, policy, "../secret.safetensors")
    assert "inside the server's LoRA directory" in refusal(model, policy, str(outside))
    assert "inside the server's LoRA directory" in refusal(model, policy, "link.safetensors")
    assert "no LoRA file 'missing'" in refusal(model, policy, "missing")
    write_lora(loras / "fine.safetensors", model)
    assert resolve(model, GenerateRequest(**CHEAP, loras=[{"path": str(loras / "fine.safetensors")}]), policy)


def test_the_server_answers_422_naming_the_field_and_the_lora(client, tmp_path):
    r = client.post("/generate", json={**CHEAP, "loras": [{"path": "no-such-lora.safetensors"}]})
    assert r.status_code == 422
    body = r.json()
    assert body["field"] == "loras.0.path" and "no-such-lora.safetensors" in body["error"]
    r = client.post("/generate", json={**CHEAP, "loras": [{"path": "x", "scale": 5}]})
    assert r.status_code == 422 and r.json()["field"] == "loras.0.scale"
    r = client.post("/generate", json={**CHEAP, "loras": [{"path": "x", "weight": 1}]})
    assert r.status_code == 422 and r.json()["field"] == "loras.0.weight"


# ---------------------------------------------------------------------------------------------- URLs and caches

@pytest.fixture()
def lora_server(model, tmp_path):
    body = (write_lora(tmp_path / "served.safetensors", model, seed=4), (tmp_path / "served.safetensors").read_bytes())[1]
    hits = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/my-lora.safetensors", hits
    server.shutdown()


def test_a_url_lora_is_downloaded_once_and_kept_by_content_hash(model, tmp_path, lora_server):
    url, hits = lora_server
    policy = policy_for(tmp_path / "models", tmp_path, fetch=FetchPolicy(timeout=5, allow_private=True))
    first = run(model, policy, loras=[{"path": url}])
    model.adapter_cache = AdapterCache()  # a fresh process: only the disk cache is left
    second = run(model, policy, loras=[{"path": url}])
    assert len(hits) == 1
    assert np.array_equal(first.frames, second.frames)
    assert first.loras[0]["path"] == url
    cached = [n for n in os.listdir(tmp_path / "lora-cache") if n.endswith(".safetensors")]
    assert cached == [first.loras[0]["sha256"] + ".safetensors"]


def test_a_url_to_a_private_address_is_refused_and_urls_can_be_turned_off(model, tmp_path, lora_server):
    url, hits = lora_server
    guarded = policy_for(tmp_path / "models", tmp_path)  # the default fetch policy: public addresses only
    assert "private or reserved address" in refusal(model, guarded, url)
    off = policy_for(tmp_path / "models", tmp_path, allow_urls=False, fetch=FetchPolicy(allow_private=True))
    assert "turned off" in refusal(model, off, url)
    small = policy_for(tmp_path / "models", tmp_path, max_bytes=100, fetch=FetchPolicy(allow_private=True))
    with pytest.raises(InvalidRequest) as caught:
        resolve(model, GenerateRequest(**CHEAP, loras=[{"path": url}]), small)
    assert caught.value.status == 413
    assert hits == ["/my-lora.safetensors"]  # only the size-limited fetch reached the server


def test_the_adapter_cache_is_bounded_and_least_recently_used_goes_first(model, models_dir, tmp_path):
    one = resolve(model, GenerateRequest(**CHEAP, loras=[{"path": "style"}]), policy_for(models_dir, tmp_path))[0][0]
    size = one.nbytes
    cache = AdapterCache(capacity_bytes=int(size * 2.5))
    for key in ("a", "b", "c"):
        cache.put((key,), one)
    assert len(cache) == 2 and cache.get(("a",)) is None and cache.get(("c",)) is one
    cache.put(("d",), one)  # b was used least recently
    assert cache.get(("b",)) is None and cache.get(("c",)) is one and cache.nbytes <= cache.capacity_bytes
    model.adapter_cache = AdapterCache()
    policy = policy_for(models_dir, tmp_path)
    resolve(model, GenerateRequest(**CHEAP, loras=[{"path": "style"}]), policy)
    resolve(model, GenerateRequest(**CHEAP, loras=[{"path": "style"}]), policy)
    assert (model.adapter_cache.misses, model.adapter_cache.hits) == (1, 1)


# ---------------------------------------------------------------------------------------------- camera LoRAs

def test_camera_loras_apply_by_their_official_names_and_combine_with_loras(model, models_dir, tmp_path):
    policy = policy_for(models_dir, tmp_path)
    request = GenerateRequest(**CHEAP, camera_lora="dolly_left")
    with pytest.raises(InvalidRequest) as caught:
        resolve(model, request, policy)
    message = caught.value.message
    assert caught.value.field == "camera_lora"
    assert "ltx-2-19b-lora-camera-control-dolly-left.safetensors" in message and "ltx2 download --camera-loras" in message
    write_lora(models_dir / "loras" / "ltx-2-19b-lora-camera-control-dolly-left.safetensors", model, seed=9)
    for move, style in (("jib_up", "kohya"), ("static", "diffusers"), ("dolly_out", "comfyui")):
        write_lora(models_dir / "loras" / f"ltx-2-19b-lora-camera-control-{move.replace('_', '-')}.safetensors", model,
                   style=style, seed=10, alpha=2.0)
        (adapter, scale), = resolve(model, GenerateRequest(**CHEAP, camera_lora=move), policy)
        assert adapter.style == {"comfyui": "ltx"}.get(style, style) and len(adapter.layers) == len(attention_layers(model))
    bare = run(model, policy)
    moved = run(model, policy, camera_lora="dolly_left", camera_lora_scale=0.5)
    both = run(model, policy, camera_lora="dolly_left", camera_lora_scale=0.5, loras=[{"path": "style"}])
    assert not np.array_equal(moved.frames, bare.frames) and not np.array_equal(both.frames, moved.frames)
    assert [(x["path"], x["scale"]) for x in both.loras] == [
        ("style", 1.0), ("ltx-2-19b-lora-camera-control-dolly-left.safetensors", 0.5)]


def test_loras_on_the_text_connectors_are_announced_to_prompt_caches(model, tmp_path):
    connector_layers = attention_layers(model, "connectors")
    adapter = Adapter("text", "d1", "ltx", factors(model, connector_layers))
    seen = []
    model.speed.pop("prompt_cache", None)  # a fresh prompt cache: this prompt may be cached by an earlier test
    original = model.pipe.connectors.forward

    def spy(*args, **kwargs):
        seen.append(model.text_adapters)
        return original(*args, **kwargs)

    model.pipe.connectors.forward = spy
    try:
        bare = generate(model, GenerateRequest(**CHEAP), adapters=[])
        adapted = generate(model, GenerateRequest(**CHEAP), adapters=[(adapter, 0.5)])
    finally:
        del model.pipe.connectors.forward
    assert seen == [(), (("d1", 0.5),)] and model.text_adapters == ()
    assert not np.array_equal(bare.frames, adapted.frames)  # the prompt's embeddings changed


def test_side_paths_nest_and_unwind_in_order(model):
    layer = attention_layers(model)[0]
    module = layer_index(model).modules[layer]
    outer = Adapter("outer", "o", "ltx", factors(model, [layer], seed=1))
    inner = Adapter("inner", "i", "ltx", factors(model, [layer], seed=2))
    x = torch.randn(3, module.in_features)
    with torch.no_grad():
        bare = module(x)
        with side_paths(model, [(outer, 1.0)]):
            with_outer = module(x)
            with side_paths(model, [(inner, 1.0)]):
                both = module(x)
            assert torch.equal(module(x), with_outer)
        assert torch.equal(module(x), bare)
    (down_o, up_o), (down_i, up_i) = outer.layers[layer], inner.layers[layer]
    assert torch.allclose(both, bare + x @ (up_o @ down_o + up_i @ down_i).T, atol=1e-5)


def test_the_runpod_handler_takes_loras_from_the_same_request_model(model, models_dir, monkeypatch, client):
    from ltx2.serving.worker import make_handler

    monkeypatch.setenv("LTX2_MODELS_DIR", str(models_dir))
    handler = make_handler(model, send_progress=lambda job, progress: None)
    out = handler({"id": "j", "input": {**CHEAP, "loras": [{"path": "style", "scale": 0.7}]}})
    assert [(x["path"], x["scale"], x["layers"]) for x in out["loras"]] == [("style", 0.7, len(attention_layers(model)))]
    refused = handler({"id": "j", "input": {**CHEAP, "loras": [{"path": "nowhere"}]}})
    served = client.post("/generate", json={**CHEAP, "loras": [{"path": "nowhere"}]}).json()
    assert refused == served and refused["field"] == "loras.0.path"
