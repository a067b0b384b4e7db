"""`ltx2 download` against a fake Hugging Face Hub on loopback.

The fake hub speaks the subset of the Hub protocol huggingface_hub 2.x uses for `hf_hub_download` and
`snapshot_download` into a local_dir:
  GET  /api/models/{repo}/revision/{rev}          repo_info: the commit sha
  GET  /api/models/{repo}/tree/{rev}?recursive=.. the file list (with LFS sizes and sha256s)
  HEAD /{repo}/resolve/{rev}/{path}               metadata: X-Repo-Commit, ETag, X-Linked-Etag/-Size
  GET  /{repo}/resolve/{rev}/{path}               small (git) files
LFS files (*.safetensors) answer the resolve call with a 302 to a second server, the "CDN", as the real hub
does; it serves GET /blobs/{sha256}. No Xet headers are sent, so the client uses plain HTTP.
Gated repos, like the real hub's, show their metadata to anyone but answer file requests with 401 without a
token and 403 with one whose account hasn't accepted the license (X-Error-Code: GatedRepo).

Each CLI subprocess imports torch (~5 s, through `ltx2/__init__`), so only runs that talk to the hub use one
(independent ones start together); the refusals that happen before any network call run in-process.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from ltx2.models.download import CAMERA_MOVES, DISTILLED_LORA, camera_lora_file, camera_lora_repo

ROOT = Path(__file__).resolve().parent.parent
COMMIT = "3f1c0ffee0ddba11ab5e1c0de5eed5a1ad0c0de5"
TOKEN = "hf_accepted_the_license"
GEMMA = "google/gemma-3-12b-it-qat-q4_0-unquantized"
GEMMA_DIRNAME = "gemma-3-12b-it-qat-q4_0-unquantized"
DEFAULT_CKPT = "ltx-2-19b-distilled-fp8.safetensors"


def blob(name: str, size: int) -> bytes:
    return random.Random(name).randbytes(size)


SHARDS = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
GEMMA_WANTED = {
    "config.json": json.dumps({"model_type": "gemma3"}).encode(),
    "generation_config.json": b'{"do_sample": true}',
    "model.safetensors.index.json": json.dumps(
        {"metadata": {}, "weight_map": {"a.weight": SHARDS[0], "b.weight": SHARDS[1], "c.weight": SHARDS[1]}}
    ).encode(),
    SHARDS[0]: blob(SHARDS[0], 3000),
    SHARDS[1]: blob(SHARDS[1], 2000),
    "tokenizer.json": b'{"version": "1.0"}',
    "tokenizer.model": blob("tokenizer.model", 500),
    "tokenizer_config.json": b'{"padding_side": "left"}',
    "special_tokens_map.json": b'{"bos_token": "<bos>"}',
    "added_tokens.json": b'{"<image_soft_token>": 262144}',
    "chat_template.json": b'{"chat_template": "{{ messages }}"}',
    "preprocessor_config.json": b'{"image_size": 896}',
    "processor_config.json": b'{"image_seq_length": 256}',
}
GEMMA_UNWANTED = {
    "README.md": b"# Gemma 3\n",
    ".gitattributes": b"*.safetensors filter=lfs\n",
    "original/params.json": b'{"dim": 3840}',
    "gemma-3-12b-it-q4_0.gguf": blob("gguf", 1500),
}
REPOS = {
    "Lightricks/LTX-2": {
        DEFAULT_CKPT: blob(DEFAULT_CKPT, 4096),
        "ltx-2-19b-dev.safetensors": blob("dev", 4096),
        "ltx-2-spatial-upscaler-x2-1.0.safetensors": blob("upsampler", 2048),
        "README.md": b"# LTX-2\n",
    },
    GEMMA: {**GEMMA_WANTED, **GEMMA_UNWANTED},
}
REPOS["Lightricks/LTX-2"][DISTILLED_LORA] = blob(DISTILLED_LORA, 2048)
# LTX-2.3's repository, under the names of its family description (and one file `ltx2 download` must skip).
LTX23 = {name: blob(name, 1024) for name in ("ltx-2.3-22b-distilled-1.1.safetensors", "ltx-2.3-22b-dev.safetensors",
                                              "ltx-2.3-spatial-upscaler-x2-1.1.safetensors",
                                              "ltx-2.3-spatial-upscaler-x1.5-1.0.safetensors",
                                              "ltx-2.3-22b-distilled-lora-384-1.1.safetensors")}
REPOS["Lightricks/LTX-2.3"] = LTX23
# LTX-2.5's repository: one file per component, in folders.
LTX25 = {path: blob(path, 512) for path in (
    "diffusion_models/ltx-2.5-22b-distilled-transformer-bf16.safetensors",
    "diffusion_models/ltx-2.5-22b-dev-transformer-bf16.safetensors",
    "text_encoders/gemma4-12b-with-proj-ltx-2.5-bf16.safetensors", "vae/ltx-2.5-video-vae-bf16.safetensors",
    "vae/ltx-2.5-video-vae-conv-bf16.safetensors", "vae/ltx-2.5-audio-vae-bf16.safetensors",
    "latent_upscale_models/ltx-2.5-latent-spatial-upscaler-x2-bf16-1.0.safetensors",
    "latent_upscale_models/ltx-2.5-latent-temporal-upscaler-x2-bf16-1.0.safetensors",
    "model_patches/ltx-2.5-duration-head-bf16.safetensors",
    "loras/ltx-2.5-22b-distilled-lora-450-bf16.safetensors")}
REPOS["Lightricks/LTX-2.5"] = LTX25
for move in CAMERA_MOVES:
    REPOS[camera_lora_repo(move)] = {camera_lora_file(move): blob(move, 1024), "README.md": b"# camera\n"}
GATED = {GEMMA}


def is_lfs(path: str) -> bool:
    return path.endswith((".safetensors", ".gguf", ".model"))


def git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    """Two loopback servers, the hub and its CDN, and the log of every request either received."""

    def __init__(self):
        self.requests: list[tuple[str, str, str, int]] = []  # (server, method, path, status)
        self._lock = threading.Lock()
        self.hub = ThreadingHTTPServer(("127.0.0.1", 0), self._handler("hub"))
        self.cdn = ThreadingHTTPServer(("127.0.0.1", 0), self._handler("cdn"))
        self.url = f"http://127.0.0.1:{self.hub.server_port}"
        self.cdn_url = f"http://127.0.0.1:{self.cdn.server_port}"
        self.blobs = {hashlib.sha256(d).hexdigest(): d for files in REPOS.values() for d in files.values()}
        for server in (self.hub, self.cdn):
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        for server in (self.hub, self.cdn):
            server.shutdown()
            server.server_close()

    def log(self, *entry):
        with self._lock:
            self.requests.append(entry)

    def _handler(self, server_name: str):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean; the hub keeps its own log
                pass

            def do_HEAD(self):
                self.handle_any(body=False)

            def do_GET(self):
                self.handle_any(body=True)

            def reply(self, status, headers=(), data=b"", body=True):
                hub.log(server_name, self.command, self.path, status)
                self.send_response(status)
                for key, value in headers:
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def error(self, status, code, message, body):
                headers = [("X-Error-Code", code), ("X-Error-Message", message), ("X-Repo-Commit", COMMIT)]
                self.reply(status, headers, json.dumps({"error": message}).encode(), body)

            def handle_any(self, body):
                path = unquote(urlsplit(self.path).path)
                if server_name == "cdn":
                    data = hub.blobs.get(path.removeprefix("/blobs/"))
                    return self.reply(200, [], data, body) if data else self.reply(404, body=body)
                api = path.startswith("/api/models/")
                parts = path.removeprefix("/api/models/" if api else "/").split("/")
                repo_id, rest = "/".join(parts[:2]), parts[2:]
                files = REPOS.get(repo_id)
                if files is None or len(rest) < 2:
                    return self.error(404, "RepoNotFound", "Repository not found", body)
                if repo_id in GATED and not api:
                    auth = self.headers.get("Authorization")
                    if auth is None:
                        return self.error(401, "GatedRepo", f"Access to model {repo_id} is restricted.", body)
                    if auth != f"Bearer {TOKEN}":
                        return self.error(403, "GatedRepo", f"Access to model {repo_id} is restricted and "
                                                            "you are not in the authorized list.", body)
                kind, revision, filename = rest[0], rest[1], "/".join(rest[2:])
                if revision not in ("main", COMMIT):
                    return self.error(404, "RevisionNotFound", "Invalid rev id", body)
                if api and kind == "revision":
                    info = {"id": repo_id, "sha": COMMIT, "siblings": [{"rfilename": f} for f in files]}
                    return self.reply(200, [("Content-Type", "application/json")], json.dumps(info).encode(), body)
                if api and kind == "tree":
                    return self.reply(200, [("Content-Type", "application/json")], json.dumps(tree(files)).encode(),
                                      body)
                if not api and kind == "resolve":
                    data = files.get(filename)
                    if data is None:
                        return self.error(404, "EntryNotFound", "Entry not found", body)
                    headers = [("X-Repo-Commit", COMMIT), ("ETag", f'"{git_oid(data)}"')]
                    if not is_lfs(filename):
                        return self.reply(200, headers, data, body)
                    sha = hashlib.sha256(data).hexdigest()
                    headers += [("X-Linked-Etag", f'"{sha}"'), ("X-Linked-Size", str(len(data))),
                                ("Location", f"{hub.cdn_url}/blobs/{sha}")]
                    return self.reply(302, headers, b"", body)
                return self.error(404, "EntryNotFound", "Unknown endpoint", body)

        return Handler


def tree(files: dict[str, bytes]) -> list[dict]:
    entries, folders = [], set()
    for path, data in files.items():
        if "/" in path:
            folders.add(path.rsplit("/", 1)[0])
        entry = {"type": "file", "path": path, "size": len(data), "oid": git_oid(data)}
        if is_lfs(path):
            entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        entries.append(entry)
    return [{"type": "directory", "path": f, "oid": "0" * 40, "size": 0} for f in sorted(folders)] + entries


@dataclass
class Run:
    rc: int
    out: str
    err: str
    requests: list[tuple[str, str, str, int]]


def launch(hub: FakeHub, home: Path, args: list[str], env: dict | None = None):
    """Start `python -m ltx2.cli download ARGS` talking only to HUB."""
    drop = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "LTX2_MODELS_DIR",
            "LTX2_GEMMA_DIR", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
    child_env = {k: v for k, v in os.environ.items() if k not in drop}
    child_env.update({
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(home / "hf_home"),  # no stored token, no shared cache
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "NO_PROXY": "127.0.0.1",
        **(env or {}),
    })
    proc = subprocess.Popen([sys.executable, "-m", "ltx2.cli", "download", *args], cwd=ROOT, env=child_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, hub, len(hub.requests)


def finish(started) -> Run:
    proc, hub, first_request = started
    out, err = proc.communicate(timeout=180)
    return Run(proc.returncode, out, err, hub.requests[first_request:])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("download")
    hubs = [FakeHub() for _ in range(2)]
    try:
        main_hub, gated_hub = hubs
        started = {
            # Models dir from the environment, token on the command line, the family's default checkpoint.
            "first": launch(main_hub, base / "main", ["--family", "ltx-2", "--token", TOKEN],
                            env={"LTX2_MODELS_DIR": str(base / "main" / "models")}),
            "loras": launch(main_hub, base / "loras", ["--family", "ltx-2", "--models-dir",
                                                       str(base / "loras" / "models"), "--skip-gemma",
                                                       "--skip-checkpoint", "--camera-loras", "--distilled-lora"]),
            "no_token": launch(gated_hub, base / "gated", ["--family", "ltx-2", "--models-dir",
                                                            str(base / "gated" / "models"),
                                                            "--skip-checkpoint", "--skip-upsampler"]),
        }
        started["ltx23"] = launch(main_hub, base / "ltx23", ["--models-dir", str(base / "ltx23" / "models"),
                                                            "--skip-gemma", "--family", "ltx-2.3", "--checkpoint",
                                                            "ltx-2.3-22b-dev", "--distilled-lora"])
        # No --family: LTX-2.5 is the default.
        started["ltx25"] = launch(main_hub, base / "ltx25", ["--models-dir", str(base / "ltx25" / "models"),
                                                            "--distilled-lora"])
        results = {name: finish(s) for name, s in started.items()}
        # As inside the Docker image: HF_HUB_OFFLINE=1 in the environment.
        results["offline"] = finish(launch(main_hub, base / "offline",
                                           ["--family", "ltx-2", "--models-dir", str(base / "offline" / "models"),
                                            "--skip-gemma"],
                                           env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}))
        # Same files again: the checkpoint named without its suffix, the models dir as a flag, the token from HF_TOKEN.
        results["second"] = finish(launch(main_hub, base / "main",
                                          ["--family", "ltx-2", "--models-dir", str(base / "main" / "models"),
                                           "--checkpoint", "ltx-2-19b-distilled-fp8"], env={"HF_TOKEN": TOKEN}))
        results["base"] = base
        yield results
    finally:
        for hub in hubs:
            hub.close()


def test_download_puts_the_served_files_where_the_server_looks(runs):
    run, models = runs["first"], runs["base"] / "main" / "models"
    assert run.rc == 0, run.err
    ckpt = models / DEFAULT_CKPT
    assert ckpt.read_bytes() == REPOS["Lightricks/LTX-2"][DEFAULT_CKPT]
    # The two-stage pipeline's upsampler, where LTX2_UPSAMPLER=auto looks for it.
    upsampler = models / "ltx-2-spatial-upscaler-x2-1.0.safetensors"
    assert upsampler.read_bytes() == REPOS["Lightricks/LTX-2"][upsampler.name]
    gemma = models / GEMMA_DIRNAME
    for name, data in GEMMA_WANTED.items():
        assert (gemma / name).read_bytes() == data, name
    assert f"LTX2_MODEL={ckpt}" in run.out
    assert f"LTX2_GEMMA_DIR={gemma}" in run.out
    # The weights came from the CDN the hub redirected to, the small files from the hub itself.
    fetched = {(server, path.split("?")[0]) for server, method, path, status in run.requests if method == "GET"}
    sha = hashlib.sha256(GEMMA_WANTED[SHARDS[0]]).hexdigest()
    assert ("cdn", f"/blobs/{sha}") in fetched
    assert ("hub", f"/{GEMMA}/resolve/{COMMIT}/config.json") in fetched


def test_only_what_loading_needs_is_downloaded(runs):
    run, models = runs["first"], runs["base"] / "main" / "models"
    assert run.rc == 0, run.err
    unwanted_shas = {hashlib.sha256(d).hexdigest() for d in GEMMA_UNWANTED.values()}
    for server, method, path, status in run.requests:
        assert not any(name in path for name in GEMMA_UNWANTED), path
        assert not any(sha in path for sha in unwanted_shas), path
        assert "ltx-2-19b-dev" not in path, path  # only the chosen checkpoint
    on_disk = {p.relative_to(models / GEMMA_DIRNAME).as_posix()
               for p in (models / GEMMA_DIRNAME).rglob("*") if p.is_file() and ".cache" not in p.parts}
    assert on_disk == set(GEMMA_WANTED)
    assert {p.name for p in models.iterdir()} <= {DEFAULT_CKPT, "ltx-2-spatial-upscaler-x2-1.0.safetensors",
                                                  GEMMA_DIRNAME, ".cache"}


def test_second_run_downloads_nothing_again(runs):
    run, models = runs["second"], runs["base"] / "main" / "models"
    assert run.rc == 0, run.err
    assert run.requests, "the second run should still check the hub for updates"
    downloads = [r for r in run.requests if r[1] == "GET" and (r[0] == "cdn" or "/resolve/" in r[2])]
    assert downloads == []
    assert all(status < 400 for *_, status in run.requests), run.requests  # HF_TOKEN was sent
    assert (models / DEFAULT_CKPT).read_bytes() == REPOS["Lightricks/LTX-2"][DEFAULT_CKPT]
    assert f"LTX2_MODEL={models / DEFAULT_CKPT}" in run.out


def test_gated_gemma_without_a_token_explains_the_license(runs):
    run = runs["no_token"]
    assert run.rc != 0
    assert "401" in run.err and "license" in run.err and "--token" in run.err and "HF_TOKEN" in run.err
    assert f"https://huggingface.co/{GEMMA}" in run.err
    assert "Traceback" not in run.err
    assert not list((runs["base"] / "gated" / "models").rglob("*.safetensors"))


@pytest.fixture
def no_hub(monkeypatch):
    """In-process runs must fail before any transfer: make every transfer an error."""
    import huggingface_hub

    def refuse(*args, **kwargs):
        raise AssertionError("ltx2 download reached the hub")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)


def test_unknown_checkpoint_lists_the_known_ones(no_hub, tmp_path, capsys):
    from ltx2.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["download", "--family", "ltx-2", "--models-dir", str(tmp_path / "models"), "--checkpoint",
              "ltx-2-19b-pro"])
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    assert "unknown checkpoint 'ltx-2-19b-pro'" in err
    for name in ("ltx-2-19b-distilled-fp8", "ltx-2-19b-distilled", "ltx-2-19b-dev", "ltx-2-19b-dev-fp8"):
        assert name in err


def test_offline_mode_is_lifted_for_the_download_only(runs):
    # As inside the Docker image, which sets HF_HUB_OFFLINE=1 for serving.
    run, models = runs["offline"], runs["base"] / "offline" / "models"
    assert run.rc == 0, run.err
    assert "HF_HUB_OFFLINE is set (so that serving never downloads); lifted for this download only." in run.out
    assert (models / DEFAULT_CKPT).read_bytes() == REPOS["Lightricks/LTX-2"][DEFAULT_CKPT]
    assert "HF_HUB_OFFLINE=1" in run.out  # and it is still what serving should be given


def test_camera_and_distilled_loras_land_in_the_lora_directory_under_their_official_names(runs):
    run, loras = runs["loras"], runs["base"] / "loras" / "models" / "loras"
    assert run.rc == 0, run.err
    assert camera_lora_repo("dolly_in") == "Lightricks/LTX-2-19b-LoRA-Camera-Control-Dolly-In"
    assert camera_lora_file("jib_down") == "ltx-2-19b-lora-camera-control-jib-down.safetensors"
    for move in CAMERA_MOVES:
        assert (loras / camera_lora_file(move)).read_bytes() == REPOS[camera_lora_repo(move)][camera_lora_file(move)]
    assert (loras / DISTILLED_LORA).read_bytes() == REPOS["Lightricks/LTX-2"][DISTILLED_LORA]
    assert not (runs["base"] / "loras" / "models" / DEFAULT_CKPT).exists()


def test_family_ltx23_fetches_its_own_files_under_their_official_names(runs):
    run, models = runs["ltx23"], runs["base"] / "ltx23" / "models"
    assert run.rc == 0, run.err
    for name in ("ltx-2.3-22b-dev.safetensors", "ltx-2.3-spatial-upscaler-x2-1.1.safetensors"):
        assert (models / name).read_bytes() == LTX23[name]
    lora = "ltx-2.3-22b-distilled-lora-384-1.1.safetensors"
    assert (models / "loras" / lora).read_bytes() == LTX23[lora]
    # Only what was asked: not the distilled checkpoint, not the x1.5 upscaler, nothing of LTX-2 19B.
    on_disk = {p.name for p in models.rglob("*.safetensors")}
    assert on_disk == {"ltx-2.3-22b-dev.safetensors", "ltx-2.3-spatial-upscaler-x2-1.1.safetensors", lora}
    assert f"LTX2_MODEL={models / 'ltx-2.3-22b-dev.safetensors'}" in run.out


@pytest.mark.parametrize("argv, message", [
    (["--family", "ltx-2.3", "--checkpoint", "ltx-2-19b-dev"],
     "unknown checkpoint 'ltx-2-19b-dev' for --family ltx-2.3; known: ltx-2.3-22b-distilled-1.1, ltx-2.3-22b-dev"),
    (["--family", "ltx-2.3", "--camera-loras"], "camera-control LoRAs are LTX-2 19B's; none is published for LTX-2.3"),
    (["--family", "ltx-9"], "unknown model family 'ltx-9'"),
])
def test_family_mistakes_are_one_line_before_any_download(argv, message, no_hub, tmp_path, capsys):
    from ltx2.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["download", "--models-dir", str(tmp_path / "models"), *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_family_ltx25_fetches_its_components_in_the_official_layout_and_no_gemma_3(runs):
    run, models = runs["ltx25"], runs["base"] / "ltx25" / "models"
    assert run.rc == 0, run.err
    wanted = {path for path in LTX25 if "dev-transformer" not in path and "temporal" not in path}
    on_disk = {p.relative_to(models).as_posix() for p in models.rglob("*.safetensors")}
    assert on_disk == wanted  # the distilled transformer, every part, the x2 upscaler, the LoRA: nothing else
    for path in wanted:
        assert (models / path).read_bytes() == LTX25[path]
    assert not (models / GEMMA_DIRNAME).exists() and "LTX2_GEMMA_DIR" not in run.out
