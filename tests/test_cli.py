"""The `ltx2` console script."""

import json
import subprocess
import sys

from ltx2.media import probe_mp4


def test_generate_to_a_file(tmp_path):
    out = tmp_path / "cat.mp4"
    proc = subprocess.run(
        [sys.executable, "-m", "ltx2.cli", "generate", "--model", "tiny", "--device", "cpu",
         "--request", json.dumps({"prompt": "a cat", "num_frames": 9, "seed": 3}), "-o", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)
    assert summary["seed"] == 3 and summary["output"] == str(out)
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
