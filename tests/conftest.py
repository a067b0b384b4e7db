import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def model():
    from ltx2 import load_model

    return load_model("tiny", device="cpu")


@pytest.fixture(scope="session")
def client(model, tmp_path_factory):
    from fastapi.testclient import TestClient

    from ltx2.app import create_app
    from ltx2.settings import Settings

    settings = Settings(output_dir=str(tmp_path_factory.mktemp("output")))
    with TestClient(create_app(settings, model=model)) as test_client:
        yield test_client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def live_server(tmp_path_factory):
    """A real `python server.py` process on loopback, as a user starts it."""
    port = free_port()
    env = {**os.environ, "LTX2_MODEL": "tiny", "LTX2_DEVICE": "cpu",
           "LTX2_OUTPUT_DIR": str(tmp_path_factory.mktemp("live-output"))}
    log_path = tmp_path_factory.mktemp("live-log") / "server.log"
    log_file = open(log_path, "w")  # a file, not a pipe: nobody reads it until the end, and a full pipe blocks
    proc = subprocess.Popen(
        [sys.executable, "server.py", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.3)
    else:
        proc.kill()
        raise RuntimeError("server did not become healthy within 120 s")
    yield base
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log_file.close()
