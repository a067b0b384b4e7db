"""Loading Gemma 3 from a local directory: offline, in the asked dtype, strictly, with named errors.

The checkpoint is the tiny preset's Gemma 3 (text + vision tower) saved with `save_pretrained`,
sharded into several files with an index, as the real 24 GB checkpoint is.
"""

import copy
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from ltx2.models import tiny
from ltx2.models.text_encoder import GemmaDirError, GemmaFileMissing, load_gemma

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ["A cat walks on the beach at sunset.", "the rain"]  # different lengths: left padding matters
INDEX = "model.safetensors.index.json"
# Names as stored in the file (Gemma 3's original layout) and as transformers reports them.
FILE_KEY = "language_model.model.layers.1.mlp.down_proj.weight"
MODEL_KEY = "model.language_model.layers.1.mlp.down_proj.weight"


@pytest.fixture(scope="module")
def source():
    tokenizer = tiny.build_tokenizer()
    torch.manual_seed(0)
    model = tiny.build_text_encoder(len(tokenizer)).requires_grad_(False)
    return model, tokenizer


@pytest.fixture(scope="module")
def gemma_dir(source, tmp_path_factory):
    model, tokenizer = source
    path = tmp_path_factory.mktemp("gemma") / "gemma-3-tiny"
    model.save_pretrained(path, max_shard_size="40KB")
    tokenizer.save_pretrained(path)
    assert (path / INDEX).is_file() and not (path / "model.safetensors").exists()
    assert len(set(json.loads((path / INDEX).read_text())["weight_map"].values())) > 2
    return path


@pytest.fixture
def broken(gemma_dir, tmp_path):
    """A private copy of the checkpoint, to damage."""
    path = tmp_path / "gemma"
    shutil.copytree(gemma_dir, path)
    return path


def hidden_states(model, tokenizer, prompts=PROMPTS):
    """What LTX2Pipeline takes from Gemma: every hidden state, for left-padded prompts."""
    tokenizer.padding_side = "left"
    batch = tokenizer(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True)
    return torch.stack(out.hidden_states, dim=-1), batch.attention_mask.bool()


def shard_of(path, key):
    return json.loads((path / INDEX).read_text())["weight_map"][key]


def edit_shard(path, key, change, update_index=True):
    """Rewrite the shard holding `key`: change(tensors) edits its dict of tensors in place."""
    index = json.loads((path / INDEX).read_text())
    shard = index["weight_map"][key]
    tensors = load_file(path / shard)
    before = set(tensors)
    change(tensors)
    save_file(tensors, path / shard, metadata={"format": "pt"})
    if update_index:
        for gone in before - set(tensors):
            del index["weight_map"][gone]
        for new in set(tensors) - before:
            index["weight_map"][new] = shard
        (path / INDEX).write_text(json.dumps(index))


# --- loading ---------------------------------------------------------------------------------


def test_loads_every_weight_and_encodes_like_the_source(source, gemma_dir):
    src_model, src_tok = source
    model, tokenizer = load_gemma(gemma_dir, "cpu", dtype=torch.float32)

    loaded = model.state_dict()
    for name, tensor in src_model.state_dict().items():
        assert torch.equal(loaded[name], tensor), name

    assert tokenizer.padding_side == "left"
    for prompt in PROMPTS:
        assert tokenizer(prompt).input_ids == src_tok(prompt).input_ids
    assert tokenizer(PROMPTS[0]).input_ids[0] == src_tok.bos_token_id

    got, mask = hidden_states(model, tokenizer)
    want, src_mask = hidden_states(src_model, src_tok)
    assert torch.equal(mask, src_mask) and not mask.all()  # the short prompt really is padded
    assert got.shape[-1] == tiny.GEMMA_LAYERS + 1
    torch.testing.assert_close(got[mask], want[mask], rtol=1e-5, atol=1e-5)

    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())


def test_bfloat16_when_asked(source, gemma_dir):
    src_model, src_tok = source
    model, tokenizer = load_gemma(gemma_dir, "cpu")  # bf16 is the default
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model.device == torch.device("cpu")

    # The file's fp32 weights were rounded once, to bf16.
    source_params = dict(src_model.named_parameters())
    for name, param in model.named_parameters():
        assert torch.equal(param, source_params[name].to(torch.bfloat16)), name

    # So it encodes like the source cast to bf16, except that transformers keeps RoPE's inv_freq
    # buffers in fp32 where `.to(bf16)` would round them: give the reference the loaded buffer dtypes.
    reference = copy.deepcopy(src_model).to(torch.bfloat16)
    source_buffers = dict(src_model.named_buffers())
    for name, buffer in model.named_buffers():
        module, _, attr = name.rpartition(".")
        setattr(reference.get_submodule(module), attr, source_buffers[name].to(buffer.dtype))
    got, mask = hidden_states(model, tokenizer)
    want, _ = hidden_states(reference, src_tok)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got[mask], want[mask])


def test_single_file_checkpoint(source, tmp_path):
    src_model, src_tok = source
    src_model.save_pretrained(tmp_path)  # small enough for one model.safetensors
    src_tok.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    model, _ = load_gemma(tmp_path, "cpu", dtype=torch.float32)
    key = "model.language_model.embed_tokens.weight"
    assert torch.equal(model.state_dict()[key], src_model.state_dict()[key])


OFFLINE_SCRIPT = textwrap.dedent(
    """
    import json, socket, sys
    import torch

    attempts = []
    def refuse(*args, **kwargs):  # recorded even if a caller swallows the error
        attempts.append(repr(args[:2]))
        raise OSError("network access during an offline load")
    socket.socket.connect = refuse
    socket.getaddrinfo = refuse
    socket.create_connection = refuse

    from ltx2.models.text_encoder import load_gemma

    model, tokenizer = load_gemma(sys.argv[1], "cpu", dtype=torch.float32)
    batch = tokenizer(json.loads(sys.argv[2]), padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**batch, output_hidden_states=True)
    torch.save({"ids": batch.input_ids, "hidden": torch.stack(out.hidden_states, -1)}, sys.argv[3])
    print(json.dumps({"attempts": attempts}))
    """
)


def test_offline_load_in_a_fresh_process(source, gemma_dir, tmp_path):
    src_model, src_tok = source
    hf_home = tmp_path / "hf_home"
    hf_home.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(hf_home), "PYTHONPATH": str(ROOT)}
    env.pop("HF_HUB_CACHE", None)
    env.pop("TRANSFORMERS_CACHE", None)
    out = tmp_path / "out.pt"
    proc = subprocess.run(
        [sys.executable, "-c", OFFLINE_SCRIPT, str(gemma_dir), json.dumps(PROMPTS), str(out)],
        check=False, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"attempts": []}
    assert list(hf_home.iterdir()) == []  # no hub cache touched

    result = torch.load(out)
    want, mask = hidden_states(src_model, src_tok)
    assert torch.equal(result["ids"], src_tok(PROMPTS, padding=True, return_tensors="pt").input_ids)
    torch.testing.assert_close(result["hidden"][mask], want[mask], rtol=1e-5, atol=1e-5)


# --- refusing a bad directory ----------------------------------------------------------------


def test_missing_directory(tmp_path):
    path = tmp_path / "nowhere"
    with pytest.raises(GemmaFileMissing, match="does not exist") as err:
        load_gemma(path, "cpu")
    assert str(path) in str(err.value)
    assert isinstance(err.value, FileNotFoundError) and isinstance(err.value, ValueError)


def test_missing_config(broken):
    (broken / "config.json").unlink()
    with pytest.raises(GemmaFileMissing, match="config.json"):
        load_gemma(broken, "cpu")


@pytest.mark.parametrize(
    ("model_type", "expected"),
    [("llama", "model_type 'llama'; expected 'gemma3'"), ("gemma3_text", "text-only"), (None, "model_type None")],
)
def test_wrong_model_type(broken, model_type, expected):
    config = json.loads((broken / "config.json").read_text())
    if model_type is None:
        del config["model_type"]
    else:
        config["model_type"] = model_type
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(GemmaDirError, match=expected) as err:
        load_gemma(broken, "cpu")
    assert str(broken / "config.json") in str(err.value)


def test_no_weights(broken):
    for shard in broken.glob("*.safetensors"):
        shard.unlink()
    (broken / INDEX).unlink()
    with pytest.raises(GemmaFileMissing, match="model.safetensors or model.safetensors.index.json"):
        load_gemma(broken, "cpu")


def test_missing_shard_is_named(broken):
    shard = shard_of(broken, FILE_KEY)
    (broken / shard).unlink()
    with pytest.raises(GemmaFileMissing, match=f"missing from .*: {shard}$"):
        load_gemma(broken, "cpu")


@pytest.mark.parametrize("cut", [1, 4096, "header"])
def test_truncated_shard_is_named(broken, cut):
    shard = broken / shard_of(broken, FILE_KEY)
    data = shard.read_bytes()
    shard.write_bytes(data[:20] if cut == "header" else data[:-cut])
    with pytest.raises(GemmaDirError, match="truncated") as err:
        load_gemma(broken, "cpu")
    assert str(shard) in str(err.value)


def test_trailing_bytes_in_a_shard(broken):
    shard = broken / shard_of(broken, FILE_KEY)
    shard.write_bytes(shard.read_bytes() + b"\0" * 16)
    with pytest.raises(GemmaDirError, match="16 more than its header declares"):
        load_gemma(broken, "cpu")


@pytest.mark.parametrize("name", ["tokenizer.json", "tokenizer_config.json"])
def test_missing_tokenizer(broken, name):
    (broken / name).unlink()
    with pytest.raises(GemmaFileMissing, match="tokenizer") as err:
        load_gemma(broken, "cpu")
    assert str(broken) in str(err.value)


# --- strict weights ----------------------------------------------------------------------------


def test_weight_missing_from_checkpoint(broken):
    # A consistent index and shard that simply lack a weight: only transformers' loading info sees it.
    edit_shard(broken, FILE_KEY, lambda t: t.pop(FILE_KEY))
    with pytest.raises(GemmaDirError, match=f"missing .*{MODEL_KEY}"):
        load_gemma(broken, "cpu")


def test_weight_missing_from_its_shard(broken):
    # The index still lists the weight: caught before loading, with the shard named.
    shard = shard_of(broken, FILE_KEY)
    edit_shard(broken, FILE_KEY, lambda t: t.pop(FILE_KEY), update_index=False)
    with pytest.raises(GemmaDirError, match=f"{shard} lacks .*{FILE_KEY}"):
        load_gemma(broken, "cpu")


def test_unexpected_weight(broken):
    extra = "language_model.model.layers.0.mlp.bogus.weight"
    edit_shard(broken, FILE_KEY, lambda t: t.__setitem__(extra, torch.zeros(4)))
    with pytest.raises(GemmaDirError, match=r"unexpected .*layers\.0\.mlp\.bogus\.weight"):
        load_gemma(broken, "cpu")


def test_mis_shaped_weight(broken):
    edit_shard(broken, FILE_KEY, lambda t: t.__setitem__(FILE_KEY, torch.zeros(3, 3)))
    with pytest.raises(GemmaDirError, match=rf"shape mismatch: {MODEL_KEY} \(file \(3, 3\), model \(32, 64\)\)"):
        load_gemma(broken, "cpu")


def test_missing_embeddings_are_not_excused_by_tying(broken):
    # lm_head is tied to the embeddings and never stored; without the embeddings neither exists.
    key = "language_model.model.embed_tokens.weight"
    edit_shard(broken, key, lambda t: t.pop(key))
    with pytest.raises(GemmaDirError, match="missing .*embed_tokens.weight"):
        load_gemma(broken, "cpu")
