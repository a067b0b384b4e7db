"""The `ltx2` console script."""

import json
import subprocess
import sys

import pytest

from ltx2.media.encode import probe_mp4


def test_generate_to_a_file(tmp_path, model):
    from lora_files import write_lora

    out = tmp_path / "cat.mp4"
    (tmp_path / "loras").mkdir()
    write_lora(tmp_path / "loras" / "style.safetensors", model)  # the CLI's tiny model has the same layers
    request = {"prompt": "a cat", "num_frames": 9, "seed": 3, "loras": [{"path": "style", "scale": 0.5}]}
    proc = subprocess.run(
        [sys.executable, "-m", "ltx2.cli", "generate", "--model", "tiny", "--device", "cpu", "--models-dir",
         str(tmp_path), "--request", json.dumps(request), "-o", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "denoising" not in proc.stderr and "loading model" not in proc.stderr  # pipes, not a terminal: no progress
    summary = json.loads(proc.stdout)
    assert summary["seed"] == 3 and summary["output"] == str(out)
    assert [(x["path"], x["scale"]) for x in summary["loras"]] == [("style", 0.5)]
    assert probe_mp4(out.read_bytes())["video"]["frames"] == 9


def test_serve_help_lists_the_settings():
    proc = subprocess.run([sys.executable, "-m", "ltx2.cli", "serve", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    for env in ("LTX2_MODEL", "LTX2_HOST", "LTX2_PORT", "LTX2_DEVICE"):
        assert env in proc.stdout


def test_unknown_model_fails_clearly():
    import pytest

    from ltx2 import load_model

    with pytest.raises(ValueError, match=r"model 'ltx-2-19b': not 'tiny' and no checkpoint at .*ltx2 download"):
        load_model("ltx-2-19b", models_dir="/nonexistent")


def test_settings_come_from_the_environment_and_flags_override_them():
    import argparse

    from ltx2.settings import Settings, add_arguments, settings_from_args

    env = {"LTX2_MODEL": "ltx-2-19b-dev", "LTX2_MODELS_DIR": "/data/models", "LTX2_MEMORY_POLICY": "sequential",
           "LTX2_FP8_COMPUTE": "upcast", "LTX2_VARIANT": "dev", "LTX2_PORT": "9000"}
    defaults = Settings.from_env(env)
    assert (defaults.model, defaults.memory_policy, defaults.fp8_compute, defaults.variant, defaults.port) == (
        "ltx-2-19b-dev", "sequential", "upcast", "dev", 9000)
    assert defaults.resolved_gemma_dir == "/data/models/gemma-3-12b-it-qat-q4_0-unquantized"
    parser = argparse.ArgumentParser()
    add_arguments(parser, defaults)
    settings = settings_from_args(parser.parse_args(["--memory-policy", "resident", "--gemma-dir", "/g"]), defaults)
    assert (settings.memory_policy, settings.resolved_gemma_dir, settings.model) == ("resident", "/g", "ltx-2-19b-dev")
    with pytest.raises(SystemExit):
        parser.parse_args(["--memory-policy", "everything"])
