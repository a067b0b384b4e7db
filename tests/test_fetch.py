"""Image/audio URLs: fetched from a local HTTP(S) server, with the SSRF, size, redirect and time bounds."""

from __future__ import annotations

import base64
import datetime
import io
import socket
import ssl
import tempfile
import threading
import time
import wave
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from ltx2.media import fetch as fetch_module
from ltx2.pipelines.conditioning import decode_conditioning
from ltx2.media.fetch import FetchPolicy, fetch, is_url
from ltx2.schema import GenerateRequest, InvalidRequest

ALLOW = FetchPolicy(timeout=5.0, allow_private=True)
LIMIT = 1000  # bytes, for the size tests


def make_png() -> bytes:
    x = np.linspace(0, 255, 48, dtype=np.uint8)
    rgb = np.stack([np.tile(x, (32, 1)), np.tile(x[:32, None], (1, 48)), np.full((32, 48), 90, np.uint8)], -1)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def make_wav() -> bytes:
    t = np.arange(8000) / 8000
    samples = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as fh:
        fh.setnchannels(1)
        fh.setsampwidth(2)
        fh.setframerate(8000)
        fh.writeframes(samples.tobytes())
    return buf.getvalue()


PNG, WAV = make_png(), make_wav()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # chunked responses need it

    def log_message(self, *args):
        pass

    def send(self, status, body=b"", content_type="application/octet-stream", **headers):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        path = self.path
        try:
            if path == "/image.png":
                self.send(200, PNG, "image/png; charset=binary")
            elif path == "/image-octet":
                self.send(200, PNG, "application/octet-stream")
            elif path == "/sound.wav":
                self.send(200, WAV, "audio/wav")
            elif path == "/host":
                self.send(200, self.headers["Host"].encode(), "text/plain")
            elif path == "/big":
                self.send(200, b"x" * (LIMIT + 1))
            elif path == "/claims-huge":  # refused on its header alone: the body never comes
                self.send_response(200)
                self.send_header("Content-Length", str(31 * 1024 * 1024))
                self.end_headers()
                time.sleep(3)
            elif path == "/endless-chunked":  # no Content-Length, never ends
                self.send_response(200)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                while True:
                    self.wfile.write(b"100\r\n" + b"x" * 256 + b"\r\n")
            elif path == "/endless-until-close":  # no length at all: the body runs until the connection closes
                self.send_response(200)
                self.send_header("Connection", "close")
                self.end_headers()
                while True:
                    self.wfile.write(b"x" * 256)
            elif path == "/slow":  # a byte every 0.5 s: no single read ever times out
                self.send_response(200)
                self.send_header("Content-Length", "100")
                self.end_headers()
                for _ in range(100):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.5)
            elif path == "/slow-headers":
                for byte in b"HTTP/1.1 200 OK\r\nX-Padding: " + b"y" * 100:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.5)
            elif path == "/missing":
                self.send(404, b"not here", "text/plain")
            elif path.startswith("/r/"):  # /r/N: N redirects, then the PNG
                n = int(path[3:])
                self.send(302, location="/image.png" if n <= 1 else f"/r/{n - 1}")
            elif path == "/to-metadata":
                self.send(302, location="http://169.254.169.254/latest/meta-data/")
            elif path == "/to-file":
                self.send(301, location="file:///etc/passwd")
            elif path == "/no-location":
                self.send(302)
            elif path == "/empty":
                self.send(200, b"", "image/png")
            elif path == "/" or path.startswith(("/?", "/echo")):  # the request target as the server got it
                self.send(200, path.encode(), "text/plain")
            elif path.startswith("/exact/"):  # /exact/N: N bytes with their Content-Length
                self.send(200, b"e" * int(path[7:]))
            elif path.startswith("/chunked/"):  # /chunked/N: N bytes in chunks, no Content-Length
                n = int(path[9:])
                self.send_response(200)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for start in range(0, n, 300):
                    piece = b"c" * min(300, n - start)
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.write(b"0\r\n\r\n")
            elif path.startswith("/redirect/"):  # /redirect/CODE: that status, to the PNG
                self.send(int(path[10:]), location="/image.png")
            elif path.startswith("/big-status/"):  # an error or 3xx page larger than any limit here
                self.send(int(path[12:]), b"p" * (LIMIT * 3), "text/html")
            elif path.startswith("/status/"):
                self.send(int(path[8:]), b"body")
            elif path == "/close-png":
                self.send(200, PNG, "image/png", connection="close")
                self.close_connection = True
            elif path == "/chunked-truncated":  # one chunk of 300 bytes, then the connection ends
                self.send_response(200)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.write(b"12c\r\n" + b"c" * 300 + b"\r\n")
                self.close_connection = True
            elif path == "/truncated":  # promises 100 bytes, sends 10, hangs up
                self.send_response(200)
                self.send_header("Content-Length", "100")
                self.end_headers()
                self.wfile.write(b"t" * 10)
                self.close_connection = True
            else:
                self.send(404)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass  # the client hung up: what the size and time bounds are for


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass


def serve(tls_context: ssl.SSLContext | None = None):
    server = Server(("127.0.0.1", 0), Handler)
    if tls_context is not None:
        server.socket = tls_context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server


@pytest.fixture(scope="module")
def base():
    server = serve()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def no_connections(monkeypatch):
    """Fail if anything is connected to; refusals must come before any connection."""
    attempts = []

    def refuse(address, *args, **kwargs):
        attempts.append(address)
        raise AssertionError(f"connection attempted to {address}")

    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


def fake_dns(monkeypatch, names: dict[str, list[str]]):
    """Resolve the given names to the given addresses (counting lookups); others as usual."""
    real = socket.getaddrinfo
    lookups = {name: 0 for name in names}

    def getaddrinfo(host, port, *args, **kwargs):
        if host in names:
            lookups[host] += 1
            return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                    for a in names[host]]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return lookups


def refusal(url, field="image_start", max_bytes=LIMIT, policy=ALLOW) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        fetch(url, field, max_bytes, policy)
    assert info.value.field == field and field in info.value.message
    return info.value


# ---------------------------------------------------------------------------------------------- basics

def test_is_url():
    assert is_url("http://x/a.png") and is_url("HTTPS://x") and is_url("Http://x")
    assert not is_url("data:image/png;base64,AAAA") and not is_url("iVBORw0KGgo") and not is_url("ftp://x")
    assert not is_url(None) and not is_url("httpx://x")


def test_policy_from_env():
    assert FetchPolicy.from_env({}) == FetchPolicy()
    policy = FetchPolicy.from_env({"LTX2_URL_TIMEOUT": "7.5", "LTX2_ALLOW_PRIVATE_URLS": "Yes"})
    assert policy.timeout == 7.5 and policy.allow_private
    for word, value in [("1", True), ("true", True), ("0", False), ("no", False), ("FALSE", False)]:
        assert FetchPolicy.from_env({"LTX2_ALLOW_PRIVATE_URLS": word}).allow_private is value
    for bad in [{"LTX2_ALLOW_PRIVATE_URLS": "maybe"}, {"LTX2_URL_TIMEOUT": "soon"}, {"LTX2_URL_TIMEOUT": "-1"}]:
        with pytest.raises(ValueError, match=next(iter(bad))):
            FetchPolicy.from_env(bad)


def test_fetches_png_and_wav_with_their_declared_types(base):
    assert fetch(f"{base}/image.png", "image_start", 10**6, ALLOW) == (PNG, "image/png")
    assert fetch(f"{base}/sound.wav", "audio", 10**6, ALLOW) == (WAV, "audio/wav")
    assert fetch(f"{base}/image-octet", "image_end", 10**6, ALLOW) == (PNG, None)  # octet-stream: undeclared


# ---------------------------------------------------------------------------------------------- SSRF

@pytest.mark.parametrize("url", [
    "http://127.0.0.1/", "http://localhost:8000/a.png", "http://10.0.0.1/", "http://192.168.1.1/x",
    "http://169.254.169.254/latest/meta-data/", "http://[::1]/", "http://0.0.0.0/", "https://172.16.0.5/",
    "http://[::ffff:127.0.0.1]/", "http://[fe80::1]/", "http://[fc00::1]/", "http://224.0.0.1/",
    "http://2130706433/",  # 127.0.0.1 as one integer: judged by what it resolves to, not how it is spelt
])
def test_private_addresses_are_refused_before_connecting(url, no_connections):
    error = refusal(url, policy=FetchPolicy())
    assert error.status == 422 and "private or reserved" in error.message
    assert no_connections == []


def test_a_name_is_refused_if_any_of_its_addresses_is_private(monkeypatch, no_connections):
    fake_dns(monkeypatch, {"mixed.example": ["8.8.8.8", "127.0.0.1"]})
    assert "private" in refusal("http://mixed.example/a.png", policy=FetchPolicy()).message
    assert no_connections == []


@pytest.mark.parametrize("address, refused", [
    ("8.8.8.8", False), ("2606:4700:4700::1111", False), ("100.64.0.1", True), ("240.0.0.1", True),
    ("255.255.255.255", True), ("::", True), ("ff02::1", True), ("fe80::1%eth0", True),
    ("2002:7f00:1::", True),  # 6to4 wrapping 127.0.0.1
    ("64:ff9b::a9fe:a9fe", True),  # NAT64 wrapping 169.254.169.254
    ("::ffff:8.8.8.8", False), ("::ffff:10.1.2.3", True), ("64:ff9b::808:808", False),
])
def test_address_classification(address, refused):
    assert fetch_module._refused(address) is refused


@pytest.mark.parametrize("url, phrase", [
    ("file:///etc/passwd", "http or https"), ("ftp://example.com/a.png", "http or https"),
    ("gopher://example.com/", "http or https"), ("data:image/png;base64,AAAA", "http or https"),
    ("http://user:secret@example.com/a.png", "credentials"), ("https://token@example.com/a.png", "credentials"),
    ("http:///a.png", "no host"), ("http://example.com:99999/", "invalid host or port"),
])
def test_bad_urls_are_refused_before_connecting(url, phrase, no_connections):
    error = refusal(url, policy=FetchPolicy())
    assert error.status == 422 and phrase in error.message
    assert no_connections == []


def test_connects_to_the_checked_address_with_the_original_host(base, monkeypatch):
    # A rebinding resolver answers once with an allowed address, then with another; the second answer
    # must never be asked for: the connection goes to the address that was checked.
    port = base.rsplit(":", 1)[1]
    lookups = fake_dns(monkeypatch, {"pinned.example": ["127.0.0.1"]})
    body, _ = fetch(f"http://pinned.example:{port}/host", "image_start", 1000, ALLOW)
    assert body == f"pinned.example:{port}".encode()
    assert lookups["pinned.example"] == 1


def test_redirect_to_metadata_address_is_refused(base, monkeypatch):
    # The local server stands in for a public one: its loopback address is let through, nothing else is.
    real = fetch_module._refused
    monkeypatch.setattr(fetch_module, "_refused", lambda a: a != "127.0.0.1" and real(a))
    connected = []
    real_connect = socket.create_connection
    monkeypatch.setattr(socket, "create_connection", lambda addr, *a, **k: connected.append(addr[0])
                        or real_connect(addr, *a, **k))
    assert fetch(f"{base}/r/1", "image_start", 10**6, FetchPolicy())[0] == PNG  # the guard lets this server by
    error = refusal(f"{base}/to-metadata", policy=FetchPolicy())
    assert "private or reserved" in error.message
    assert "169.254.169.254" not in connected and set(connected) == {"127.0.0.1"}
    assert "http or https" in refusal(f"{base}/to-file", policy=FetchPolicy()).message


def test_redirects_are_followed_up_to_the_limit(base):
    assert fetch(f"{base}/r/3", "image_start", 10**6, ALLOW) == (PNG, "image/png")
    error = refusal(f"{base}/r/4")
    assert error.status == 422 and "redirected more than 3 times" in error.message
    assert fetch(f"{base}/r/4", "image_start", 10**6, FetchPolicy(allow_private=True, max_redirects=4))[0] == PNG
    assert "without a Location" in refusal(f"{base}/no-location").message


# ---------------------------------------------------------------------------------------------- size, status, time

def test_content_length_over_the_limit_is_413_before_the_body(base):
    error = refusal(f"{base}/big")
    assert error.status == 413 and error.message == "image_start URL is 1001 bytes; the limit is 1000 bytes"
    start = time.monotonic()
    error = refusal(f"{base}/claims-huge", max_bytes=20 * 1024 * 1024, policy=FetchPolicy(timeout=2, allow_private=True))
    assert error.status == 413 and error.message == "image_start URL is 31 MB; the limit is 20 MB"
    assert time.monotonic() - start < 1  # refused on the header, not after waiting for the body


@pytest.mark.parametrize("path", ["/endless-chunked", "/endless-until-close"])
def test_body_without_length_is_cut_at_the_limit(base, path):
    start = time.monotonic()
    error = refusal(f"{base}{path}", field="audio")
    assert error.status == 413 and "larger than the limit of 1000 bytes" in error.message
    assert time.monotonic() - start < 2


def test_error_status_is_422_naming_it(base):
    error = refusal(f"{base}/missing", field="image_end")
    assert error.status == 422 and error.message == "image_end URL answered 404"
    assert "empty" in refusal(f"{base}/empty").message


@pytest.mark.parametrize("path", ["/slow", "/slow-headers"])
@pytest.mark.slow
def test_slow_drip_is_cut_at_the_overall_timeout(base, path):
    start = time.monotonic()
    error = refusal(f"{base}{path}", policy=FetchPolicy(timeout=1.0, allow_private=True))
    elapsed = time.monotonic() - start
    assert error.status == 422 and error.message == "image_start URL timed out after 1 s"
    assert 0.9 < elapsed < 2.0  # a per-read timeout alone would wait ~50 s here


def test_unreachable_port_is_422():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again before the fetch: nothing listens there
    assert "could not be fetched" in refusal(f"http://127.0.0.1:{port}/a.png").message


# ---------------------------------------------------------------------------------------------- https

@pytest.fixture(scope="module")
def tls_server():
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pinned.example")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("pinned.example")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    with tempfile.TemporaryDirectory() as tmp:
        with open(f"{tmp}/cert.pem", "wb") as fh:
            fh.write(cert_pem)
        with open(f"{tmp}/key.pem", "wb") as fh:
            fh.write(key_pem)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(f"{tmp}/cert.pem", f"{tmp}/key.pem")
    seen_sni = []
    context.sni_callback = lambda sock, server_name, ctx: seen_sni.append(server_name)
    server = serve(context)
    yield server.server_address[1], cert_pem.decode(), seen_sni
    server.shutdown()
    server.server_close()


def test_https_pins_the_address_and_checks_the_certificate_for_the_name(tls_server, monkeypatch):
    port, cert_pem, seen_sni = tls_server
    trusting = ssl.create_default_context(cadata=cert_pem)
    monkeypatch.setattr(fetch_module, "_tls_context", lambda: trusting)
    lookups = fake_dns(monkeypatch, {"pinned.example": ["127.0.0.1"], "other.example": ["127.0.0.1"]})
    assert fetch(f"https://pinned.example:{port}/image.png", "image_start", 10**6, ALLOW) == (PNG, "image/png")
    assert seen_sni[-1] == "pinned.example" and lookups["pinned.example"] == 1
    # The same address under a name the certificate does not hold: refused by the hostname check.
    assert "could not be fetched" in refusal(f"https://other.example:{port}/image.png", max_bytes=10**6).message
    assert seen_sni[-1] == "other.example"


# ---------------------------------------------------------------------------------------------- end to end

@pytest.mark.slow
def test_decode_conditioning_fetches_urls_like_base64(base, monkeypatch):
    monkeypatch.setenv("LTX2_ALLOW_PRIVATE_URLS", "true")
    by_url = decode_conditioning(GenerateRequest(prompt="x", image_start=f"{base}/image.png",
                                                 image_end=f"{base}/image-octet", audio=f"{base}/sound.wav"),
                                 16_000, 24_000)
    inline = decode_conditioning(GenerateRequest(prompt="x", image_start=base64.b64encode(PNG).decode(),
                                                 image_end="data:image/png;base64," + base64.b64encode(PNG).decode(),
                                                 audio=base64.b64encode(WAV).decode()), 16_000, 24_000)
    for name in ("image_start", "image_end"):
        fetched, sent = getattr(by_url, name), getattr(inline, name)  # prepared in the sandbox, at the frame
        assert fetched.size == sent.size and fetched.pixels.keys() == sent.pixels.keys()
        assert all(fetched.pixels[size].equal(sent.pixels[size]) for size in sent.pixels)
    np.testing.assert_array_equal(by_url.audio_for_vae, inline.audio_for_vae)
    np.testing.assert_array_equal(by_url.audio_for_output, inline.audio_for_output)
    assert by_url.audio_seconds == pytest.approx(1.0)


@pytest.mark.slow  # seconds in one process: out of the quick tier
def test_decode_conditioning_refuses_private_urls_by_default(base, monkeypatch, no_connections):
    monkeypatch.delenv("LTX2_ALLOW_PRIVATE_URLS", raising=False)
    with pytest.raises(InvalidRequest) as info:
        decode_conditioning(GenerateRequest(prompt="x", audio=f"{base}/sound.wav"), 16_000, 24_000)
    assert info.value.field == "audio" and info.value.status == 422
    assert no_connections == []


@pytest.mark.slow
def test_server_fetches_image_urls_as_its_settings_say(model, base, tmp_path):
    """--allow-private-urls (LTX2_ALLOW_PRIVATE_URLS) is read once, with the other settings, at start-up."""
    from fastapi.testclient import TestClient

    from ltx2.serving.app import create_app
    from ltx2.settings import Settings

    payload = {"prompt": "a gradient", "width": 64, "height": 64, "num_frames": 9, "num_inference_steps": 1,
               "image_start": f"{base}/image.png"}
    allowed = Settings(output_dir=str(tmp_path / "a"), allow_private_urls=True)
    with TestClient(create_app(allowed, model=model)) as client:
        r = client.post("/generate", json=payload)
    assert r.status_code == 200, r.text
    assert r.json()["has_image_start"] is True
    with TestClient(create_app(Settings(output_dir=str(tmp_path / "b")), model=model)) as client:
        r = client.post("/generate", json=payload)
    assert r.status_code == 422 and r.json()["field"] == "image_start"


@pytest.mark.parametrize("field, url", [("image_start", "file:///etc/passwd"), ("image_end", "FTP://host/a.png"),
                                        ("audio", "s3://bucket/a.wav")])
def test_other_url_schemes_say_which_are_accepted(client, field, url):
    r = client.post("/generate", json={"prompt": "a cat", "width": 64, "height": 64, "num_frames": 9, field: url})
    assert r.status_code == 422 and r.json()["field"] == field
    scheme = url.split(":")[0].lower()
    assert r.json()["error"] == (f"{field} is a {scheme}:// URL; accepted are http:// and https:// URLs, a data URI "
                                 "(data:<type>;base64,...) or bare base64")


# ---------------------------------------------------------------------------------------------- rules at their edges
# Each rule of ltx2/media/fetch.py checked at its boundary (tools/mutate fetch runs these for every mutant).

@pytest.mark.parametrize("content_type, declared", [
    ("image/png", "image/png"), ("IMAGE/PNG; charset=binary", "image/png"), (" audio/wav ;x=1", "audio/wav"),
    ("video/mp4", "video/mp4"), ("application/ogg", "application/ogg"), ("application/octet-stream", None),
    ("binary/octet-stream", None), ("text/plain", None), ("application/json", None), ("", None), (None, None),
])
def test_declared_mime_keeps_only_media_types(content_type, declared):
    assert fetch_module._declared_mime(content_type) == declared


def test_other_schemes_are_refused_by_name_and_the_rest_left_alone():
    for value in ("http://x/a.png", "HTTPS://x", "data:image/png;base64,AAAA", "iVBORw0KGgo=", None, b"ftp://x"):
        fetch_module.refuse_other_schemes(value, "image_start")  # not another scheme's URL: no refusal
    for value, scheme in (("file:///etc/passwd", "file"), ("S3://bucket/a.wav", "s3"), ("git+ssh://h/r", "git+ssh")):
        with pytest.raises(InvalidRequest) as info:
            fetch_module.refuse_other_schemes(value, "audio")
        assert info.value.field == "audio" and info.value.message.startswith(f"audio is a {scheme}:// URL; accepted")


def test_policy_timeout_must_be_positive_and_finite():
    from types import SimpleNamespace

    assert FetchPolicy.from_settings(SimpleNamespace(url_timeout=0.01, allow_private_urls=True)) == FetchPolicy(
        timeout=0.01, allow_private=True)
    for bad in (0.0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="LTX2_URL_TIMEOUT"):
            FetchPolicy.from_settings(SimpleNamespace(url_timeout=bad, allow_private_urls=False))


def test_exactly_the_limit_is_accepted_with_or_without_a_length(base):
    assert fetch(f"{base}/exact/{LIMIT}", "image_start", LIMIT, ALLOW) == (b"e" * LIMIT, None)
    assert fetch(f"{base}/chunked/{LIMIT}", "image_start", LIMIT, ALLOW) == (b"c" * LIMIT, None)
    assert refusal(f"{base}/exact/{LIMIT + 1}").status == 413
    error = refusal(f"{base}/chunked/{LIMIT + 1}")
    assert error.status == 413 and error.message == "image_start URL is larger than the limit of 1000 bytes"


def test_only_2xx_is_a_body(base):
    assert fetch(f"{base}/status/299", "image_start", LIMIT, ALLOW) == (b"body", None)
    assert fetch(f"{base}/status/200", "image_start", LIMIT, ALLOW) == (b"body", None)
    for code in (199, 300, 304, 400, 500):
        assert refusal(f"{base}/status/{code}").message == f"image_start URL answered {code}"


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_every_redirect_status_is_followed(base, code):
    assert fetch(f"{base}/redirect/{code}", "image_start", 10**6, ALLOW) == (PNG, "image/png")


@pytest.mark.parametrize("code", [300, 304, 305, 306, 309])
def test_other_3xx_statuses_are_not_redirects(base, code):
    assert refusal(f"{base}/redirect/{code}").message == f"image_start URL answered {code}"


@pytest.mark.parametrize("url, scheme", [("ftp://example.com/a.png", "ftp"), ("//example.com/a.png", "schemeless"),
                                         ("FILE:///etc/passwd", "file")])
def test_another_scheme_is_named_in_the_refusal(url, scheme, no_connections):
    assert refusal(url, policy=FetchPolicy()).message == f"image_start URL must be http or https, not {scheme}"


@pytest.mark.parametrize("code", [300, 404, 500])
def test_the_body_of_an_error_page_is_not_read(base, code):
    # The status is the answer: a 3 kB error page against a 1 kB limit is "answered", not "too large".
    assert refusal(f"{base}/big-status/{code}").message == f"image_start URL answered {code}"


def test_redirect_limit_is_named_in_the_refusal(base):
    error = refusal(f"{base}/r/3", policy=FetchPolicy(allow_private=True, max_redirects=2))
    assert error.message == "image_start URL redirected more than 2 times"
    assert refusal(f"{base}/no-location").message == "image_start URL answered 302 without a Location"
    assert refusal(f"{base}/r/1", policy=FetchPolicy(allow_private=True, max_redirects=0)).message == (
        "image_start URL redirected more than 0 times")


def test_the_request_target_is_the_path_and_query_percent_encoded(base):
    def target(url):
        return fetch(url, "image_start", LIMIT, ALLOW)[0].decode()

    assert target(base) == "/"
    assert target(f"{base}?q=1") == "/?q=1"
    assert target(f"{base}/echo/a b?q=1 2&x=%41") == "/echo/a%20b?q=1%202&x=%41"
    assert target(f"{base}/echo/\u00e9") == "/echo/%C3%A9"
    assert target(f"{base}/echo/plain") == "/echo/plain"
    # Printable ASCII from '!' to '~' goes as sent; space, DEL and the rest are percent-encoded.
    assert target(f"{base}/echo/!$'()*+,;=:@~") == "/echo/!$'()*+,;=:@~"
    assert target(f"{base}/echo/a\x7fb") == "/echo/a%7Fb"


@pytest.fixture
def connects(monkeypatch):
    """Every (address, port) connected to, with the sockets made; `refuse` makes a connection fail."""
    record = {"to": [], "sockets": [], "refuse": set(), "timeout": set()}
    real = socket.create_connection

    def create_connection(address, *args, **kwargs):
        record["to"].append(address)
        if address[0] in record["timeout"]:
            raise TimeoutError("timed out")
        if address[0] in record["refuse"]:
            raise ConnectionRefusedError(111, "Connection refused")
        sock = real(address, *args, **kwargs)
        record["sockets"].append(sock)
        return sock

    monkeypatch.setattr(socket, "create_connection", create_connection)
    return record


def test_default_ports_are_80_and_443(monkeypatch, connects):
    fake_dns(monkeypatch, {"plain.example": ["203.0.113.7"]})
    connects["refuse"].add("203.0.113.7")
    for url, port in (("http://plain.example/a", 80), ("https://plain.example/a", 443),
                      ("http://plain.example:8080/a", 8080), ("HTTPS://plain.example:8443", 8443)):
        error = refusal(url, policy=ALLOW)
        assert error.message == "image_start URL could not be fetched: Connection refused"
        assert connects["to"][-1] == ("203.0.113.7", port)


def test_every_checked_address_is_tried_in_order_until_one_connects(base, monkeypatch, connects):
    port = int(base.rsplit(":", 1)[1])
    fake_dns(monkeypatch, {"two.example": ["127.0.0.2", "127.0.0.3", "127.0.0.1"]})
    connects["refuse"] |= {"127.0.0.2", "127.0.0.3"}
    assert fetch(f"http://two.example:{port}/image.png", "image_start", 10**6, ALLOW) == (PNG, "image/png")
    assert connects["to"] == [("127.0.0.2", port), ("127.0.0.3", port), ("127.0.0.1", port)]


def test_a_connect_timeout_ends_the_fetch_without_trying_more_addresses(monkeypatch, connects):
    fake_dns(monkeypatch, {"slow.example": ["203.0.113.8", "203.0.113.9"]})
    connects["timeout"].add("203.0.113.8")
    assert refusal("http://slow.example/a").message == "image_start URL timed out after 5 s"
    assert connects["to"] == [("203.0.113.8", 80)]


def test_a_truncated_body_is_a_read_error_naming_what_was_missing(base):
    # Found by this test: read1() returned the 10 bytes as if they were the whole file.
    assert refusal(f"{base}/truncated").message == "image_start URL could not be read: the body ended after 10 of 100 bytes"
    assert refusal(f"{base}/chunked-truncated").message.startswith(
        "image_start URL could not be read: IncompleteRead(")  # http.client's own words for a cut chunk


@pytest.mark.parametrize("path", ["/image.png", "/close-png", "/big", "/chunked/1001", "/missing", "/r/1",
                                  "/truncated"])
def test_every_socket_is_closed_when_the_fetch_ends(base, path, connects):
    try:
        fetch(f"{base}{path}", "image_start", LIMIT if path != "/image.png" else 10**6, ALLOW)
    except InvalidRequest:
        pass
    assert connects["sockets"] and all(s.fileno() == -1 for s in connects["sockets"])


def test_a_failed_tls_handshake_closes_its_socket(base, connects):
    # An https URL at a plain-HTTP server: the handshake fails, and the socket must not leak.
    assert "could not be fetched" in refusal(base.replace("http://", "https://") + "/image.png").message
    assert len(connects["sockets"]) == 1 and connects["sockets"][0].fileno() == -1


@pytest.fixture
def thread_errors(monkeypatch):
    errors = []
    monkeypatch.setattr(threading, "excepthook", lambda args: errors.append(args.exc_type))
    return errors


@pytest.mark.parametrize("failure", [socket.gaierror(-2, "Name or service not known"), UnicodeError("label too long"),
                                     None])
def test_a_name_that_does_not_resolve_is_422_and_no_thread_error(monkeypatch, thread_errors, failure):
    def getaddrinfo(*args, **kwargs):
        if failure is None:
            return []
        raise failure

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    assert refusal("http://gone.example/a").message == "image_start URL's host gone.example could not be resolved"
    assert thread_errors == []


def test_resolving_gives_each_address_once_in_resolver_order(monkeypatch):
    fake_dns(monkeypatch, {"many.example": ["203.0.113.5", "2001:db8::5", "203.0.113.5", "203.0.113.4"]})
    addresses = fetch_module._resolve("many.example", 80, "audio", time.monotonic() + 5)
    assert addresses == ["203.0.113.5", "2001:db8::5", "203.0.113.4"]


def test_a_slow_resolver_is_cut_at_the_deadline(monkeypatch):
    release = threading.Event()

    def getaddrinfo(host, port, *args, **kwargs):
        release.wait(5)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("203.0.113.1", port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    try:
        start = time.monotonic()
        assert refusal("http://slow-dns.example/", policy=FetchPolicy(timeout=0.3)).message == (
            "image_start URL timed out after 0.3 s")
        assert time.monotonic() - start < 1.5
        # The resolver still waiting is a daemon thread: it cannot hold the process open at exit.
        waiting = [t for t in threading.enumerate() if t.name == "ltx2-resolve"]
        assert waiting and all(t.daemon for t in waiting)
        start = time.monotonic()
        with pytest.raises(TimeoutError):  # a deadline already past: no wait at all
            fetch_module._resolve("slow-dns.example", 80, "audio", time.monotonic() - 10)
        assert time.monotonic() - start < 0.5
    finally:
        release.set()


def test_the_deadline_sets_each_socket_timeout_to_the_time_left():
    with pytest.raises(TimeoutError):
        fetch_module._remaining(time.monotonic() - 0.001)
    assert 9.0 < fetch_module._remaining(time.monotonic() + 10) <= 10.0


@pytest.mark.parametrize("address, refused", [
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", True),  # Teredo
    ("2002:808:808::1", False),  # 6to4 wrapping 8.8.8.8, itself public
    ("2002:a00:1::", True),  # 6to4 wrapping 10.0.0.1
    ("::ffff:169.254.169.254", True), ("64:ff9b::7f00:1", True), ("64:ff9b::a00:1", True),
    ("1.1.1.1", False), ("172.15.255.255", False), ("172.16.0.0", True), ("172.31.255.255", True),
    ("172.32.0.0", False), ("192.0.2.1", True), ("198.18.0.1", True), ("169.254.1.1", True), ("127.255.255.254", True),
    ("0.0.0.0", True), ("239.255.255.255", True), ("223.255.255.255", False), ("fe80::1", True), ("ff0e::1", True),
])
def test_more_address_classification(address, refused):
    assert fetch_module._refused(address) is refused


@pytest.mark.parametrize("address", ["1000::1", "e000::1", "4000::1", "fec0::1", "feff::1"])
def test_reserved_and_site_local_ipv6_ranges_that_count_as_global_are_refused(address):
    # fec0::/10 (site-local, deprecated) was fetched until this test: ipaddress counts it as global.
    assert fetch_module._refused(address) is True


@pytest.mark.parametrize("address, inner", [
    ("64:ff9b::808:809", "8.8.8.9"), ("64:ff9b::c000:2ab", "192.0.2.171"), ("::ffff:10.1.2.3", "10.1.2.3"),
    ("2002:808:809::1", "8.8.8.9"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "192.0.2.45"),  # Teredo: the client, stored inverted
])
def test_an_ipv6_address_is_judged_by_the_ipv4_address_inside(monkeypatch, address, inner):
    real, seen = fetch_module._refused, []
    monkeypatch.setattr(fetch_module, "_refused", lambda a: seen.append(a) or real(a))
    real(address)
    assert seen == [inner]
