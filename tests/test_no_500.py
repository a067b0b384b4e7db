"""No input gives a 500 or shows a server path; keys stay out of logs and argv; connections are shared fairly.

Most of these run against a real `python server.py` (tests/servers.py): the body is parsed by uvicorn and
Starlette as a user's would be, the access log is uvicorn's own, and the connection caps are in uvicorn's
protocol class.
"""

from __future__ import annotations

import base64
import json
import os
import resource
import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from hostile import closed_within, host_port, open_idle, png, request_bytes
from servers import start_server, stop_server, wait_for_job

KEY = "test-key-0123456789abcdef"
AUTH = {"X-API-Key": KEY}
CHEAP = {"prompt": "a boat", "width": 64, "height": 64, "num_frames": 9, "num_inference_steps": 1, "seed": 1}
SLOW = {"prompt": "a slow boat", "width": 288, "height": 512, "num_frames": 49, "num_inference_steps": 100, "seed": 2}
OPENAI = "/v1/videos"
LTX = "/v1/generations/text-to-video"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server: its key in a file, LoRA files that are broken, 1 MB images, 8 connections per address."""
    root = tmp_path_factory.mktemp("no500")
    (root / "key").write_text(KEY + "\n")
    loras = root / "models" / "loras"
    loras.mkdir(parents=True)
    (loras / "broken.safetensors").write_bytes(b"\xff" * 64)
    (loras / "folder.safetensors").mkdir()
    proc, base = start_server(root / "out", root / "server.log", "--api-key-file", str(root / "key"),
                              "--models-dir", str(root / "models"), "--max-connections", "40",
                              "--max-connections-per-client", "8", env={"LTX2_MAX_IMAGE_MB": "1"})
    with httpx.Client(base_url=base, headers=AUTH, timeout=60) as http:
        yield {"proc": proc, "base": base, "http": http, "log": root / "server.log", "root": root}
    stop_server(proc)


def refused(r: httpx.Response, route: str, field: str, status: int = 422) -> str:
    """The error's message, after checking it is `route`'s own JSON shape naming `field` (the LTX API
    answers invalid parameters with the vendor's 400)."""
    if route.startswith("/v1/generations") and status == 422:
        status = 400
    assert r.status_code == status, (r.status_code, r.text[:300])
    body = r.json()
    if route.startswith("/v1/generations"):
        assert body["type"] == "error" and body["error"]["param"] == field, body
        return body["error"]["message"]
    if route.startswith(OPENAI):
        assert body["error"]["param"] == field and body["error"]["type"] == "invalid_request_error", body
        return body["error"]["message"]
    assert body["field"] == field and isinstance(body["error"], str), body
    return body["error"]


HOSTILE_VALUES = {
    "100,000 nested brackets": "[" * 100_000 + "]" * 100_000,
    "990 nested brackets": "[" * 990 + "]" * 990,
    "1e308": "1e308",
    "5000 digits": "9" * 5000,
}


@pytest.mark.parametrize("route,seconds_field", [(OPENAI, "seconds"), (LTX, "duration")])
def test_hostile_numbers_and_nesting_in_forms_and_json_are_422s_naming_the_field(server, route, seconds_field):
    http = server["http"]
    for name, value in HOSTILE_VALUES.items():
        for field in ("seed", "fps", "guidance_scale", "loras", seconds_field):
            form = http.post(route, files={"prompt": (None, "a boat"), "size" if route == OPENAI else "resolution":
                                           (None, "64x64"), field: (None, value)})
            assert form.status_code == (422 if route == OPENAI else 400), (name, field, form.status_code, form.text[:200])
            assert refused(form, route, form.json()["error"]["param"])
            as_json = http.post(route, content=f'{{"prompt": "a boat", "{field}": {value}}}',
                                headers={"Content-Type": "application/json"})
            assert as_json.status_code == (422 if route == OPENAI else 400), (name, field, as_json.status_code,
                                                                              as_json.text[:200])
    # The ones that reached a rule name their field, in words.
    message = refused(http.post(route, json={"prompt": "a boat", seconds_field: 1e308}), route, seconds_field)
    assert seconds_field in message and "seconds" in message
    form = http.post(route, files={"prompt": (None, "a boat"), "seed": (None, HOSTILE_VALUES["100,000 nested brackets"])})
    assert "seed" in refused(form, route, "seed")


@pytest.mark.parametrize("route,field", [(OPENAI, "size"), (LTX, "resolution")])
def test_sizes_take_ascii_digits_only(server, route, field):
    http = server["http"]
    for text in ("１９２０x１０８０", "٦٤x٦٤", "6４x64", "9" * 5000 + "x64"):
        for r in (http.post(route, json={"prompt": "a boat", field: text}),
                  http.post(route, files={"prompt": (None, "a boat"), field: (None, text)})):
            message = refused(r, route, field)
            assert field in message and "0-9" in message
    ok = http.post(route, json={"prompt": "a boat", field: "64x64", "num_frames": 9, "num_inference_steps": 1})
    assert ok.status_code in (200, 202), ok.text
    wait_for_job(http, ok.json()["id"])


def stream_until_answered(base: str, path: str, head: bytes, part_head: bytes, total: int) -> tuple[bytes, int]:
    """Send a multipart body of `total` declared bytes 256 KB at a time until the server answers; the
    answer and how many body bytes had been sent."""
    host, port = host_port(base)
    filler = b"\0" * (256 * 1024)
    with socket.create_connection((host, port)) as sock:
        sock.sendall(head + part_head)
        sent = len(part_head)
        sock.settimeout(0.02)
        while sent < total:
            try:
                sent += sock.send(filler[:min(len(filler), total - sent)])
            except (TimeoutError, BlockingIOError):
                pass
            except OSError:
                break
            try:
                if answer := sock.recv(65536):
                    return whole(sock, answer), sent
            except (TimeoutError, BlockingIOError):
                pass
            except OSError:
                break
        sock.settimeout(10)
        return whole(sock, sock.recv(65536)), sent


def whole(sock: socket.socket, answer: bytes) -> bytes:
    """The rest of a response whose first bytes are `answer` (it has a Content-Length)."""
    sock.settimeout(10)
    while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < int(
            answer.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0]):
        if not (more := sock.recv(65536)):
            break
        answer += more
    return answer


@pytest.mark.parametrize("route,field", [(OPENAI, "input_reference"), ("/v1/generations/image-to-video", "image")])
def test_an_upload_over_its_limit_is_refused_while_it_streams(server, route, field):
    total = 60 * 1024 * 1024  # declared; the image limit is 1 MB (LTX2_MAX_IMAGE_MB)
    boundary = "b0undary"
    prompt = f'--{boundary}\r\nContent-Disposition: form-data; name="prompt"\r\n\r\na boat\r\n'.encode()
    part = (f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="big.png"\r\n'
            "Content-Type: image/png\r\n\r\n").encode()
    head = (f"POST {route} HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\nContent-Length: {total}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n").encode()
    start = time.monotonic()
    answer, sent = stream_until_answered(server["base"], route, head, prompt + part, total)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < 16 * 1024 * 1024 and time.monotonic() - start < 20, sent  # not the 60 MB
    body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    message = body["error"]["message"]  # OpenAI's shape and the LTX API's both nest it
    assert field in message and "1 MB" in message
    assert body["error"]["param"] == field
    # A file within the limit still works, and a text field keeps its own (1 MB) limit.
    small = server["http"].post(route, data={"prompt": "a boat", "num_inference_steps": "1", "num_frames": "9"},
                                files={field: ("p.png", png(64, 64), "image/png")})
    assert small.status_code in (200, 202), small.text
    wait_for_job(server["http"], small.json()["id"])
    big_prompt = server["http"].post(route, files={"prompt": (None, "a" * 1_100_000), field: ("p.png", png(), "image/png")})
    assert big_prompt.status_code == 413 and "prompt" in big_prompt.text


def test_lora_errors_name_the_file_never_the_server_path(server):
    http, root = server["http"], str(server["root"])
    for name in ("broken.safetensors", "folder.safetensors", "missing.safetensors", "/etc/passwd",
                 "../../etc/passwd", root + "/models/loras/broken.safetensors"):
        for route in ("/jobs", OPENAI):
            body = {**CHEAP, "loras": [{"path": name}]}
            if route == OPENAI:
                body = {"prompt": "a boat", "size": "64x64", "num_frames": 9, "num_inference_steps": 1,
                        "loras": [{"path": name}]}
            r = http.post(route, json=body)
            text = r.text
            if r.status_code in (200, 202):
                text = json.dumps(wait_for_job(http, r.json()["id"]))
            if not name.startswith(root):  # (a client that sends a server path may see it quoted back)
                assert root not in text, text
            assert "loras" in text, text


def test_query_keys_are_redacted_from_the_access_log_and_refused_in_words(server):
    http = httpx.Client(base_url=server["base"], timeout=30)  # no key header
    r = http.get(f"/v1/videos?api_key={KEY}")
    assert r.status_code == 401 and "not read from the URL" in r.json()["error"]["message"]
    http.get(f"/health?token={KEY}&x=1")
    http.get(f"/jobs/{KEY}", headers=AUTH)  # a key pasted as a job id
    http.get("/health?access_token=s3cr3t-token-value")
    time.sleep(0.5)
    log = server["log"].read_text()
    assert "GET /health?token=[redacted]&x=1" in log and "/v1/videos?api_key=[redacted]" in log
    assert KEY not in log and "s3cr3t-token-value" not in log
    # Nor is the key on the command line (it came from --api-key-file).
    cmdline = Path(f"/proc/{server['proc'].pid}/cmdline").read_bytes()
    assert KEY.encode() not in cmdline
    assert server["http"].get("/v1/videos").status_code == 200  # the file's key works
    assert httpx.get(f"{server['base']}/v1/videos", timeout=10).status_code == 401


def test_one_address_cannot_hold_every_connection(server):
    # --max-connections 40, 8 per address: 100 idle connections from 127.0.0.1 hold 8, and /health from
    # another address (127.0.0.2, the same loopback) is answered.
    socks = open_idle(server["base"], 100)
    try:
        time.sleep(0.5)
        held = 0
        for s in socks:
            s.settimeout(0.05)
            try:
                data = s.recv(4096)
            except TimeoutError:
                held += 1
                continue
            assert data == b"" or b"503" in data.split(b"\r\n", 1)[0], data[:100]
            if data:
                assert b"too_many_connections_from_client" in data
        assert held <= 8, held
        host, port = host_port(server["base"])
        with socket.create_connection((host, port), source_address=("127.0.0.2", 0)) as other:
            other.sendall(request_bytes("GET", "/health"))
            other.settimeout(10)
            assert other.recv(4096).startswith(b"HTTP/1.1 200")
    finally:
        for s in socks:
            s.close()
    time.sleep(0.5)
    assert server["http"].get("/health").status_code == 200  # the address's count went back down


def test_connections_leave_the_descriptors_a_job_needs(tmp_path):
    # No per-address cap here: one address takes every connection it can, while a job waits for its turn.
    proc, base = start_server(tmp_path / "out", tmp_path / "server.log", "--max-connections-per-client", "0")
    socks = []
    try:
        with httpx.Client(base_url=base, timeout=60) as http:  # its connection is opened before the flood
            ahead = http.post("/jobs", json={**CHEAP, "num_inference_steps": 40}).json()["id"]
            image = "data:image/png;base64," + base64.b64encode(png(64, 64)).decode()
            behind = http.post("/jobs", json={**CHEAP, "image_start": image}).json()["id"]
            open_now = len(os.listdir(f"/proc/{proc.pid}/fd"))
            soft = open_now + 200
            resource.prlimit(proc.pid, resource.RLIMIT_NOFILE, (soft, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
            socks = open_idle(base, 400)
            time.sleep(0.5)
            free = soft - len(os.listdir(f"/proc/{proc.pid}/fd"))
            held = sum(1 for sock in socks if closed_within(sock, 0.001) is None)
            assert 0 < held < 200 and free >= 128 - 2, (held, free)  # FD_RESERVE stays free
            for job in (ahead, behind):  # the second decodes its image (a sandboxed child) and writes its video
                view = wait_for_job(http, job)
                assert view["status"] == "succeeded", view
    finally:
        for s in socks:
            s.close()
        stop_server(proc)


def test_a_waiting_generate_gets_a_json_503_with_its_job_id_on_shutdown(tmp_path):
    proc, base = start_server(tmp_path / "out", tmp_path / "server.log", "--shutdown-grace", "3")
    answers: dict[str, httpx.Response | Exception] = {}

    def generate(name: str, body: dict) -> None:
        try:
            answers[name] = httpx.post(f"{base}/generate", json=body, timeout=60)
        except httpx.HTTPError as exc:
            answers[name] = exc

    try:
        threads = [threading.Thread(target=generate, args=("running", SLOW))]
        threads[0].start()
        with httpx.Client(base_url=base, timeout=10) as http:
            deadline = time.monotonic() + 30
            while not http.get("/health").json().get("progress") and time.monotonic() < deadline:
                time.sleep(0.05)
            threads.append(threading.Thread(target=generate, args=("queued", CHEAP)))
            threads[1].start()
            while http.get("/health").json()["queue"]["waiting"] < 1 and time.monotonic() < deadline:
                time.sleep(0.05)
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(30)
        for name in ("queued", "running"):
            r = answers[name]
            assert isinstance(r, httpx.Response), (name, r)
            assert r.status_code == 503 and r.headers["content-type"] == "application/json", (name, r.text[:200])
            body = r.json()
            assert body["code"] == "shutting_down" and body["job_id"] in body["error"], body
            assert r.headers["location"].endswith(f"/jobs/{body['job_id']}")
        assert "kept and runs when the server starts again" in answers["queued"].json()["error"]
        assert time.monotonic() - start < 10
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_delete_of_a_job_that_does_not_stop_in_time_is_a_409(make_client, monkeypatch):
    from ltx2.serving import app as app_module
    from ltx2.serving import openai_api

    release = threading.Event()

    def stuck(self, job, on_step):  # a stage that never looks at the cancel flag
        release.wait(60)
        raise RuntimeError("released")

    monkeypatch.setattr(app_module._State, "_run_job", stuck)
    monkeypatch.setattr(openai_api, "CANCEL_WAIT", 0.5)
    client = make_client()
    try:
        video = client.post(OPENAI, json={"prompt": "a boat", "size": "64x64", "num_frames": 9}).json()
        deadline = time.monotonic() + 30
        while client.get(f"/jobs/{video['id']}").json()["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        r = client.delete(f"{OPENAI}/{video['id']}")
        assert r.status_code == 409, r.text
        error = r.json()["error"]
        assert error["code"] == "still_running" and video["id"] in error["message"]
    finally:
        release.set()
    view = wait_for_job(client, video["id"])
    assert view["status"] in ("cancelled", "failed")
    assert client.delete(f"{OPENAI}/{video['id']}").json()["deleted"] is True
