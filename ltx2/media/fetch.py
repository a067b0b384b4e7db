"""Fetch `image_start`, `image_end` and `audio` given as http(s) URLs, without opening an SSRF hole.

A URL in a request makes the server connect somewhere on the user's behalf, so every fetch is bounded:

- Only http and https, and no credentials in the URL.
- The host is resolved once and refused if any address it resolves to is not public (loopback,
  private, link-local such as the cloud metadata address 169.254.169.254, multicast, reserved,
  unspecified, or an IPv6 form that embeds one of those), unless the policy allows private
  addresses. The connection then goes to the exact address that was checked, with the original
  name in the Host header and, for https, in SNI and certificate checking: a second DNS lookup
  that answers differently (DNS rebinding) never happens.
- Redirects are followed by hand, at most `max_redirects`, each target checked like the first.
- The body is refused by Content-Length before it is read and counted while streaming, so a
  missing or lying length cannot make us hold more than `max_bytes`.
- One deadline covers resolving, connecting and every read, so a server sending a byte at a time
  cannot hold us past `timeout`.

Refusals are `InvalidRequest(field, ...)`: 422, or 413 when the body is too large.
"""

from __future__ import annotations

import http.client
import io
import ipaddress
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from urllib.parse import quote, urljoin, urlsplit

from .inputs import UNDECLARED_MIMES, _size_text
from ..schema import InvalidRequest

REDIRECT_STATUSES = {301, 302, 303, 307, 308}
CHUNK = 64 * 1024
# Printable ASCII stays as sent (it may already be percent-encoded); anything else in the path is
# percent-encoded so that no control character or space can reach the request line.
_SAFE_IN_TARGET = "".join(chr(c) for c in range(33, 127))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


@dataclass
class FetchPolicy:
    """How URLs are fetched. `from_env()` reads LTX2_URL_TIMEOUT (seconds) and LTX2_ALLOW_PRIVATE_URLS."""

    timeout: float = 30.0
    allow_private: bool = False
    max_redirects: int = 3

    @classmethod
    def from_settings(cls, settings) -> FetchPolicy:
        """The policy `--url-timeout` / `--allow-private-urls` (or their env variables) ask for."""
        if not 0 < settings.url_timeout < float("inf"):
            raise ValueError(f"LTX2_URL_TIMEOUT={settings.url_timeout!r} must be a positive number")
        return cls(timeout=settings.url_timeout, allow_private=settings.allow_private_urls)

    @classmethod
    def from_env(cls, env: dict | None = None) -> FetchPolicy:
        from ..settings import Settings  # one parser for every setting

        return cls.from_settings(Settings.from_env(env))


def is_url(value) -> bool:
    """True for a string starting with http:// or https:// (any case); everything else is base64 or a data URI."""
    return isinstance(value, str) and value[:8].lower().startswith(("http://", "https://"))


_ANY_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


def refuse_other_schemes(value, field: str) -> None:
    """A URL of another scheme (file://, ftp://...) is refused as a URL, rather than decoded as base64
    (base64 has no ':', so nothing else looks like this)."""
    match = _ANY_SCHEME.match(value) if isinstance(value, str) else None
    if match and not is_url(value):
        raise InvalidRequest(field, f"{field} is a {match.group(1).lower()}:// URL; accepted are http:// and "
                                    "https:// URLs, a data URI (data:<type>;base64,...) or bare base64")


def fetch(url: str, field: str, max_bytes: int, policy: FetchPolicy | None = None) -> tuple[bytes, str | None]:
    """GET `url`; return (body, declared mime or None). Refusals raise InvalidRequest naming `field`."""
    policy = policy or FetchPolicy()
    deadline = time.monotonic() + policy.timeout
    try:
        for _ in range(policy.max_redirects + 1):
            status, headers, body = _get_once(url, field, max_bytes, policy, deadline)
            if status in REDIRECT_STATUSES:
                location = headers.get("Location")
                if not location:
                    raise InvalidRequest(field, f"{field} URL answered {status} without a Location")
                url = urljoin(url, location.strip())
                continue
            if not 200 <= status < 300:
                raise InvalidRequest(field, f"{field} URL answered {status}")
            if not body:
                raise InvalidRequest(field, f"{field} URL returned an empty body")
            return body, _declared_mime(headers.get("Content-Type"))
        raise InvalidRequest(field, f"{field} URL redirected more than {policy.max_redirects} times")
    except TimeoutError:
        raise InvalidRequest(field, f"{field} URL timed out after {policy.timeout:g} s") from None


def _declared_mime(content_type: str | None) -> str | None:
    """The Content-Type without parameters, or None when it says nothing about the media type.

    A server's type is its configuration, not the user's claim: generic types (octet-stream, S3's
    binary/octet-stream, text/plain) count as undeclared so a correct file behind a lazily configured
    server is still accepted; a specific image/audio/video type is checked against the content.
    """
    mime = (content_type or "").split(";")[0].strip().lower()
    if mime in UNDECLARED_MIMES or not mime.startswith(("image/", "audio/", "video/", "application/ogg")):
        return None
    return mime


def pinned_connection(url: str, field: str, policy: FetchPolicy, deadline: float):
    """(connection, request target) for a GET of `url`: http(s) only, no credentials, a valid host,
    resolved once and pinned, refused when it points to a private or reserved address (unless allowed).
    Shared by every fetch of a user's URL (inputs here, LoRA files in ltx2.pipelines.loras)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise InvalidRequest(field, f"{field} URL must be http or https, not {scheme or 'schemeless'}")
    if parts.username is not None or parts.password is not None:
        raise InvalidRequest(field, f"{field} URL must not contain credentials (user:password@)")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
        host = (parts.hostname or "").encode("idna").decode("ascii")
    except (ValueError, UnicodeError):
        raise InvalidRequest(field, f"{field} URL has an invalid host or port") from None
    if not host:
        raise InvalidRequest(field, f"{field} URL has no host")

    addresses = _resolve(host, port, field, deadline)
    if not policy.allow_private:
        for address in addresses:
            if _refused(address):
                # The address is not echoed: it would tell the caller how internal names resolve.
                raise InvalidRequest(field, f"{field} URL points to a private or reserved address; "
                                     "only public addresses are fetched")

    target = quote(parts.path or "/", safe=_SAFE_IN_TARGET)
    if parts.query:
        target += "?" + quote(parts.query, safe=_SAFE_IN_TARGET)
    conn = _PinnedConnection(host, port, addresses, deadline, tls=scheme == "https")
    return conn, target


def _get_once(url: str, field: str, max_bytes: int, policy: FetchPolicy, deadline: float):
    """One GET without following redirects: (status, headers, body); body is empty for redirects."""
    conn, target = pinned_connection(url, field, policy, deadline)
    response = None
    try:
        try:
            conn.request("GET", target, headers={"User-Agent": "ltx2", "Accept-Encoding": "identity"})
            response = conn.getresponse()
        except TimeoutError:
            raise
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise InvalidRequest(field, f"{field} URL could not be fetched: {_reason(exc)}") from None
        if response.status in REDIRECT_STATUSES or not 200 <= response.status < 300:
            return response.status, response.headers, b""  # the body of a redirect or error is not needed

        length = response.headers.get("Content-Length")
        if length is not None and length.strip().isdigit() and int(length) > max_bytes:
            raise InvalidRequest(field, f"{field} URL is {_size_text(int(length))}; the limit is "
                                 f"{_size_text(max_bytes)}", status=413)
        body = bytearray()
        try:
            while chunk := response.read1(CHUNK):
                body += chunk
                if len(body) > max_bytes:  # Content-Length absent or lying: stop here and drop the connection
                    raise InvalidRequest(field, f"{field} URL is larger than the limit of {_size_text(max_bytes)}",
                                         status=413)
        except (TimeoutError, InvalidRequest):
            raise
        except (OSError, http.client.HTTPException) as exc:  # truncated body, bad chunking, reset...
            raise InvalidRequest(field, f"{field} URL could not be read: {_reason(exc)}") from None
        if length is not None and length.strip().isdigit() and len(body) < int(length):
            # read1() ends quietly when the server hangs up early: a cut-off file is not a file.
            raise InvalidRequest(field, f"{field} URL could not be read: the body ended after {len(body)} of "
                                 f"{int(length)} bytes")
        return response.status, response.headers, bytes(body)
    finally:
        if response is not None:  # http.client detaches a "Connection: close" response from its connection
            response.close()
        conn.close()  # also what aborts a body that ran over the limit


def _resolve(host: str, port: int, field: str, deadline: float) -> list[str]:
    """Every address `host` resolves to, in resolver order. getaddrinfo has no timeout of its own, so it
    runs in a daemon thread and we stop waiting at the deadline."""
    result: dict = {}

    def work():
        try:
            result["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            result["error"] = exc

    thread = threading.Thread(target=work, daemon=True, name="ltx2-resolve")
    thread.start()
    thread.join(max(0.0, deadline - time.monotonic()))
    if thread.is_alive():
        raise TimeoutError
    if "error" in result or not result.get("infos"):
        raise InvalidRequest(field, f"{field} URL's host {host} could not be resolved")
    addresses = []
    for _family, _type, _proto, _name, sockaddr in result["infos"]:
        if sockaddr[0] not in addresses:
            addresses.append(sockaddr[0])
    return addresses


def _refused(address: str) -> bool:
    """True unless `address` is a public unicast address (IPv6 forms that embed IPv4 are judged by that IPv4)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone ("fe80::1%eth0")
    if isinstance(ip, ipaddress.IPv6Address):
        # IPv4-mapped and NAT64 addresses are that IPv4 address, whatever the IPv6 tables say of their prefix.
        if ip.ipv4_mapped is not None:
            return _refused(str(ip.ipv4_mapped))
        if ip in _NAT64:
            return _refused(str(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)))
        # 6to4 and Teredo tunnel to the IPv4 address inside: both it and the outer address must pass.
        embedded = ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None and _refused(str(embedded)):
            return True
    # is_global alone misses multicast (224/4 counts as global), some reserved IPv6 ranges and the
    # deprecated IPv6 site-local range fec0::/10, which some internal networks still route.
    return (not ip.is_global or ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast
            or ip.is_reserved or ip.is_unspecified or getattr(ip, "is_site_local", False))


class _PinnedConnection(http.client.HTTPConnection):
    """An HTTP(S) connection to already-checked addresses: `host` is used only for the Host header, SNI and
    the certificate check, never looked up again."""

    def __init__(self, host: str, port: int, addresses: list[str], deadline: float, tls: bool):
        super().__init__(host, port)
        self._addresses, self._deadline, self._tls = addresses, deadline, tls

    def connect(self):
        error: OSError | None = None
        for address in self._addresses:
            try:
                # An IP literal: create_connection's own getaddrinfo parses it without any DNS query.
                sock = socket.create_connection((address, self.port), timeout=_remaining(self._deadline))
                break
            except TimeoutError:
                raise
            except OSError as exc:
                error = exc
        else:
            raise error or OSError("no address to connect to")
        try:
            if self._tls:
                sock.settimeout(_remaining(self._deadline))
                sock = _tls_context().wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        self.sock = _DeadlineSocket(sock, self._deadline)


def _tls_context() -> ssl.SSLContext:
    """The system's trusted CAs with hostname checking (a function so tests can trust their own CA)."""
    return ssl.create_default_context()


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


class _DeadlineSocket:
    """A socket whose every send and receive is bounded by what is left until one overall deadline.

    A per-call socket timeout alone would let a server that drips a byte just inside each timeout
    hold the connection forever; here the time left shrinks with every call.
    """

    def __init__(self, sock: socket.socket, deadline: float):
        self._sock, self._deadline = sock, deadline
        self._readers, self._closed = 0, False

    def sendall(self, data) -> None:
        self._sock.settimeout(_remaining(self._deadline))
        self._sock.sendall(data)

    def recv_into(self, buffer) -> int:
        self._sock.settimeout(_remaining(self._deadline))
        return self._sock.recv_into(buffer)

    def makefile(self, mode="rb", *args, **kwargs):  # what http.client reads the response through
        self._readers += 1
        return io.BufferedReader(_DeadlineReader(self))

    def close(self) -> None:
        # As with a real socket's makefile(): http.client closes the connection of a "Connection: close"
        # response before its body is read, so the socket stays open until the reader is closed too.
        self._closed = True
        if self._readers == 0:
            self._sock.close()

    def _reader_closed(self) -> None:
        self._readers -= 1
        if self._closed and self._readers == 0:
            self._sock.close()


class _DeadlineReader(io.RawIOBase):
    def __init__(self, sock: _DeadlineSocket):
        self._sock = sock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        return self._sock.recv_into(buffer)

    def close(self) -> None:
        if not self.closed:
            self._sock._reader_closed()
        super().close()


def _reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


__all__ = ["FetchPolicy", "fetch", "is_url"]
