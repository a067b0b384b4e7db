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

def test_decode_conditioning_fetches_urls_like_base64(base, monkeypatch):
    monkeypatch.setenv("LTX2_ALLOW_PRIVATE_URLS", "true")
    by_url = decode_conditioning(GenerateRequest(prompt="x", image_start=f"{base}/image.png",
                                                 image_end=f"{base}/image-octet", audio=f"{base}/sound.wav"),
                                 16_000, 24_000)
    inline = decode_conditioning(GenerateRequest(prompt="x", image_start=base64.b64encode(PNG).decode(),
                                                 image_end="data:image/png;base64," + base64.b64encode(PNG).decode(),
                                                 audio=base64.b64encode(WAV).decode()), 16_000, 24_000)
    for name in ("image_start", "image_end"):
        np.testing.assert_array_equal(np.asarray(getattr(by_url, name)), np.asarray(getattr(inline, name)))
    np.testing.assert_array_equal(by_url.audio_for_vae, inline.audio_for_vae)
    np.testing.assert_array_equal(by_url.audio_for_output, inline.audio_for_output)
    assert by_url.audio_seconds == pytest.approx(1.0)


def test_decode_conditioning_refuses_private_urls_by_default(base, monkeypatch, no_connections):
    monkeypatch.delenv("LTX2_ALLOW_PRIVATE_URLS", raising=False)
    with pytest.raises(InvalidRequest) as info:
        decode_conditioning(GenerateRequest(prompt="x", audio=f"{base}/sound.wav"), 16_000, 24_000)
    assert info.value.field == "audio" and info.value.status == 422
    assert no_connections == []


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
