"""The API key and the request-body limit (ltx2/security.py), in-process and against a real uvicorn."""

import asyncio
import json
import socket
import time

import httpx
import pytest
from fastapi.testclient import TestClient
from servers import launch, stop_server, wait_healthy

from ltx2.serving.app import create_app
from ltx2.serving.security import INVALID_KEY, MISSING_KEY, SecurityMiddleware
from ltx2.settings import Settings

KEY = "s3cret-key"
MB = 1024 * 1024
CHEAP_GENERATE = {"prompt": "x", "num_frames": 9, "width": 64, "height": 64, "num_inference_steps": 1}


@pytest.fixture(scope="module")
def real_server_process(tmp_path_factory):
    """Start the real server first thing, so its model loads while the in-process tests run."""
    out = tmp_path_factory.mktemp("security-server")
    proc, base = launch(out / "output", out / "server.log", "--api-key", KEY, "--max-body-mb", "1")
    yield proc, base, out / "server.log"
    stop_server(proc)


@pytest.fixture(autouse=True, scope="module")
def _start_server_early(real_server_process):
    yield


@pytest.fixture(scope="module")
def real_server(real_server_process):
    proc, base, log_path = real_server_process
    wait_healthy(proc, base, log_path)
    return int(base.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def make_client(model, tmp_path_factory):
    def make(**settings):
        output_dir = str(tmp_path_factory.mktemp("output"))  # job records stay out of the repo
        return TestClient(create_app(settings=Settings(output_dir=output_dir, **settings), model=model))

    return make


@pytest.fixture(scope="module")
def keyed(make_client):
    with make_client(api_key=KEY, max_body_mb=1) as client:
        yield client


# ---------------------------------------------------------------------------------------------
# API key


def test_missing_key_is_401_with_challenge(keyed):
    for method, path in (("GET", "/"), ("POST", "/generate")):
        r = keyed.request(method, path, json=CHEAP_GENERATE if method == "POST" else None)
        assert r.status_code == 401, (path, r.text)
        assert r.json() == {"error": MISSING_KEY, "code": "unauthorized", "field": None, "errors": []}
        assert r.headers["www-authenticate"] == "Bearer"


def test_wrong_key_is_401_in_both_header_styles(keyed):
    for headers in ({"Authorization": "Bearer nope"}, {"X-API-Key": "nope"},
                    {"Authorization": f"Bearer {KEY}x"}, {"X-API-Key": KEY[:-1]}):
        r = keyed.get("/", headers=headers)
        assert r.status_code == 401, headers
        assert r.json()["error"] == INVALID_KEY
        assert r.json()["code"] == "unauthorized"


def test_key_in_another_auth_scheme_does_not_count(keyed):
    r = keyed.get("/", headers={"Authorization": f"Basic {KEY}"})
    assert r.status_code == 401
    assert r.json()["error"] == MISSING_KEY


def test_right_key_in_either_header_style(keyed):
    assert keyed.get("/", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert keyed.get("/", headers={"authorization": f"bearer {KEY}"}).status_code == 200  # scheme is case-insensitive
    r = keyed.post("/generate", json=CHEAP_GENERATE, headers={"X-API-Key": KEY})
    assert r.status_code == 200, r.text
    assert r.json()["video"].startswith("data:video/mp4;base64,")


def test_health_is_open_but_only_exactly_health(keyed):
    assert keyed.get("/health").status_code == 200
    assert keyed.get("/healthz").status_code == 401  # exemption is by exact route path, not prefix


def test_docs_open_when_public_and_schema_describes_the_key(keyed):
    for path in ("/docs", "/openapi.json", "/docs/oauth2-redirect"):
        assert keyed.get(path).status_code == 200, path
    schema = keyed.get("/openapi.json").json()
    assert set(schema["components"]["securitySchemes"]) == {"BearerKey", "HeaderKey"}
    assert schema["components"]["securitySchemes"]["HeaderKey"]["name"] == "X-API-Key"
    assert schema["security"] == [{"BearerKey": []}, {"HeaderKey": []}]
    assert schema["paths"]["/health"]["get"]["security"] == []


def test_docs_need_the_key_when_not_public(make_client):
    with make_client(api_key=KEY, docs_public=False) as client:
        for path in ("/docs", "/openapi.json", "/docs/oauth2-redirect"):
            assert client.get(path).status_code == 401, path
            assert client.get(path, headers={"X-API-Key": KEY}).status_code == 200, path
        assert client.get("/health").status_code == 200


def test_no_key_means_open_and_no_security_in_schema(make_client):
    with make_client(max_body_mb=1) as client:
        assert client.get("/").status_code == 200
        assert client.get("/docs").status_code == 200
        assert "security" not in client.get("/openapi.json").json()
        # The body limit holds without a key too.
        r = client.post("/generate", content=b"{}", headers={"Content-Length": str(2 * MB)})
        assert r.status_code == 413


# ---------------------------------------------------------------------------------------------
# Body limit, through FastAPI


def test_declared_oversize_body_is_413_with_close(keyed):
    # Content-Length says 60 MB; only a few bytes exist. A reader would wait for the rest: a 413 shows it did not.
    r = keyed.post("/generate", content=b"{}", headers={"X-API-Key": KEY, "Content-Length": str(60 * MB)})
    assert r.status_code == 413
    assert r.json() == {"error": "the request body is 60.0 MB; the limit is 1 MB (LTX2_MAX_BODY_MB)",
                        "code": "payload_too_large", "field": None, "errors": []}
    assert r.headers["connection"] == "close"


def test_auth_comes_before_the_body_limit(keyed):
    r = keyed.post("/generate", content=b"{}", headers={"Content-Length": str(60 * MB)})
    assert r.status_code == 401
    assert r.headers["connection"] == "close"  # its unread body must not be parsed as a next request


def test_chunked_oversize_body_is_413(keyed):
    def chunks():
        for _ in range(20):  # 1.25 MB in all, no Content-Length
            yield b" " * 65536

    r = keyed.post("/generate", content=chunks(), headers={"X-API-Key": KEY})
    assert r.status_code == 413, r.text
    assert r.json()["code"] == "payload_too_large"
    assert r.json()["error"] == "the request body is larger than the limit of 1 MB (LTX2_MAX_BODY_MB)"
    assert r.headers["connection"] == "close"


def test_bodies_under_the_limit_pass(keyed):
    # Padded with JSON whitespace to just under 1 MB: still a valid request, served normally.
    text = json.dumps(CHEAP_GENERATE)
    body = text[:-1] + " " * (MB - len(text) - 16) + "}"
    assert len(body) < MB
    r = keyed.post("/generate", content=body, headers={"X-API-Key": KEY, "Content-Type": "application/json"})
    assert r.status_code == 200, r.text

    def chunks():  # the same, chunked
        for i in range(0, len(body), 65536):
            yield body[i:i + 65536].encode()

    r = keyed.post("/generate", content=chunks(), headers={"X-API-Key": KEY, "Content-Type": "application/json"})
    assert r.status_code == 200, r.text


# ---------------------------------------------------------------------------------------------
# Body limit, at the ASGI level: what the wrapped app gets to see


class RecordingApp:
    """Reads the whole body the way Starlette does, then answers 200; records what it received."""

    def __init__(self):
        self.called = False
        self.body = b""
        self.messages = []

    async def __call__(self, scope, receive, send):
        self.called = True
        while True:
            message = await receive()
            self.messages.append(message["type"])
            if message["type"] == "http.disconnect":
                break
            self.body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"app"})


def run_asgi(middleware, headers, chunks):
    pulled = []
    sent = []

    async def receive():
        index = len(pulled)
        pulled.append(index)
        if index < len(chunks):
            return {"type": "http.request", "body": chunks[index], "more_body": index < len(chunks) - 1}
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/generate", "root_path": "", "headers": headers}
    asyncio.run(middleware(scope, receive, send))
    return pulled, sent


def test_declared_oversize_never_calls_receive_or_the_app():
    app = RecordingApp()
    pulled, sent = run_asgi(SecurityMiddleware(app, max_body_mb=1), [(b"content-length", str(60 * MB).encode())],
                            [b"x" * 1000])
    assert pulled == [] and not app.called
    assert sent[0]["status"] == 413
    assert (b"connection", b"close") in sent[0]["headers"]


def test_chunked_oversize_app_sees_no_more_body_and_its_reply_is_dropped():
    app = RecordingApp()
    chunks = [b"a" * (300 * 1024)] * 10  # 3 MB offered against a 1 MB limit
    pulled, sent = run_asgi(SecurityMiddleware(app, max_body_mb=1), [(b"transfer-encoding", b"chunked")], chunks)
    assert len(pulled) == 4  # stopped at the chunk that crossed 1 MB; the other 6 were never pulled
    assert len(app.body) == 3 * 300 * 1024  # the crossing chunk was withheld from the app
    assert app.messages[-1] == "http.disconnect"
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]  # only our 413
    assert sent[0]["status"] == 413 and b"payload_too_large" in sent[1]["body"]


def test_unauthenticated_request_never_reaches_the_app():
    app = RecordingApp()
    pulled, sent = run_asgi(SecurityMiddleware(app, api_key=KEY, max_body_mb=1),
                            [(b"content-length", b"10")], [b"x" * 10])
    assert pulled == [] and not app.called and sent[0]["status"] == 401


# ---------------------------------------------------------------------------------------------
# A real uvicorn server and a raw socket


def read_response(sock, deadline):
    """Read one HTTP response (headers + Content-Length body); returns (status, headers, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    while len(body) < int(headers["content-length"]):
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-body"
        body += chunk
    return status, headers, body


def assert_server_closes(sock, deadline):
    sock.settimeout(max(0.01, deadline - time.monotonic()))
    try:
        assert sock.recv(65536) == b""  # EOF: the server hung up instead of waiting for the rest
    except ConnectionResetError:
        pass  # also hung up


def test_real_server_refuses_60_mb_from_its_headers(real_server):
    port = real_server
    head = (f"POST /generate HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {60 * MB}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        start = time.monotonic()
        sock.sendall(head + b"{" + b" " * 4095)  # the first 4 KB of a 60 MB body, and no more
        status, headers, body = read_response(sock, start + 5)
        latency = time.monotonic() - start
        print(f"\n413 for a declared 60 MB body after {latency * 1000:.1f} ms (4 KB sent)")
        assert status == 413
        assert latency < 5
        assert json.loads(body)["code"] == "payload_too_large"
        assert json.loads(body)["error"].startswith("the request body is 60.0 MB; the limit is 1 MB")
        assert headers["connection"] == "close"
        assert_server_closes(sock, time.monotonic() + 5)

    # Unauthenticated, the same upload is refused by the key check, also without reading.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        start = time.monotonic()
        sock.sendall(head.replace(f"X-API-Key: {KEY}\r\n".encode(), b"") + b" " * 4096)
        status, headers, body = read_response(sock, start + 5)
        assert status == 401 and headers["connection"] == "close"
        assert_server_closes(sock, time.monotonic() + 5)

    # And it keeps serving.
    r = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
    assert r.status_code == 200 and r.json()["status"] == "healthy"


def test_real_server_refuses_an_oversize_chunked_body(real_server):
    port = real_server
    head = (f"POST /generate HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {KEY}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
    chunk = b"%x\r\n%s\r\n" % (65536, b" " * 65536)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        start = time.monotonic()
        sock.sendall(head + chunk * 17)  # 1.06 MB against a 1 MB limit, and the body never ends
        status, headers, body = read_response(sock, start + 5)
        assert status == 413, body
        assert json.loads(body)["code"] == "payload_too_large"
        assert headers["connection"] == "close"
        assert_server_closes(sock, time.monotonic() + 5)
    assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
