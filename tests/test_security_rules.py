"""The rules of ltx2/serving/security.py, each checked at its boundary without a model or a server.

Fast on purpose: `tools/mutate security` runs this file for every mutant. Expected values come from the
rules as written in the docstrings and the README (the digest from hashlib itself, byte limits from
MB = 2**20), never from the middleware's own output. The real-server checks stay in test_security.py.
"""

import asyncio
import hashlib
import json
import logging

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from ltx2.serving.security import (
    ANONYMOUS,
    INVALID_KEY,
    MISSING_KEY,
    Caller,
    SecurityMiddleware,
    caller_of,
    install_security,
    load_keys,
    parse_keys,
)
from ltx2.settings import Settings

MB = 2**20
KEY = "k" * 20


class App:
    """Records what reached it: the scope and every body message it pulled; answers 200 (or starts its
    reply before reading the body when `reply_first`)."""

    def __init__(self, reply_first=False):
        self.scopes, self.messages, self.reply_first = [], [], reply_first

    async def __call__(self, scope, receive, send):
        self.scopes.append(scope)
        if scope["type"] == "lifespan" or scope["type"] == "websocket":
            return
        if self.reply_first:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        while True:
            message = await receive()
            self.messages.append(message)
            if message["type"] == "http.disconnect" or (message["type"] == "http.request"
                                                         and not message.get("more_body")):
                break
        if not self.reply_first:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"app"})


def call(mw, headers=(), chunks=(b"",), path="/generate", root_path="", kind="http", extra_messages=()):
    """Run one request through the middleware; returns (messages sent to the client, scope)."""
    sent, queue = [], [*extra_messages]
    queue += [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]

    async def receive():
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    # The type rebuilt, as a server hands it over: equal to the literal, not necessarily the same object.
    scope = {"type": "".join(list(kind)), "path": path, "root_path": root_path, "headers": list(headers)}
    asyncio.run(mw(scope, receive, send))
    return sent, scope


def status(sent):
    return sent[0].get("status") if sent else None


def headers_of(sent):
    return dict(sent[0]["headers"])


def body_json(sent):
    """The error body, in the API's one error shape (no field, no per-field errors at the door)."""
    body = json.loads(b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"))
    assert body.pop("field") is None and body.pop("errors") == []
    return body


# ---------------------------------------------------------------------------------------------
# Who may see a job


def test_caller_sees_jobs_by_owner_admin_or_open_server():
    alice, admin = Caller("alice"), Caller("root", admin=True)
    assert alice.sees("alice", True) and not alice.sees("bob", True)
    assert admin.sees("bob", True) and admin.sees(None, True)
    assert not ANONYMOUS.sees(None, True)  # a keyed server's anonymous caller owns nothing, not even None's jobs
    assert ANONYMOUS.sees("bob", False) and alice.sees("bob", False)  # an open server: everyone sees everything
    assert ANONYMOUS == Caller(None, False)
    assert not Caller("bob").sees("alice", True) and not Caller("alice").sees("bob", True)  # no ordering
    assert alice.sees("".join(["al", "ice"]), True)  # equal names, not the same string object
    assert not alice.sees(None, True)


def test_a_caller_is_an_immutable_value():
    assert hash(Caller("a")) == hash(Caller("a")) and len({Caller("a"), Caller("a"), Caller("a", True)}) == 2
    with pytest.raises(AttributeError):
        Caller("a").admin = True


# ---------------------------------------------------------------------------------------------
# Key lists


def test_parse_keys_splits_on_newlines_and_commas_and_drops_comments():
    text = "a:k1, b : k2\n\n# c:k3\nd:k4 # the ops key\n , \n"
    assert parse_keys(text, "x") == {"a": "k1", "b": "k2", "d": "k4"}
    assert parse_keys("e:k#tail#more", "x") == {"e": "k"}


@pytest.mark.parametrize("text, number", [
    ("just-a-key", 1), ("a:k1\nnocolon", 2), ("a:k1,b:", 2), ("a:k1\n\n:k2", 3), ("a:k 1", 1), ("bad name:k", 1),
    ("a:k1,b/c:k2", 2), ("x" * 65 + ":k", 1),
])
def test_parse_keys_names_the_bad_entry(text, number):
    with pytest.raises(ValueError, match=rf"^keys\.txt: entry {number} must be name:key"):
        parse_keys(text, "keys.txt")


def test_parse_keys_accepts_names_up_to_64_of_the_allowed_characters():
    name = "A_z.9@-" + "n" * 57
    assert len(name) == 64 and parse_keys(f"{name}:key", "x") == {name: "key"}


def test_parse_keys_refuses_a_repeated_name():
    with pytest.raises(ValueError, match=r"keys\.txt: the name 'a' appears twice"):
        parse_keys("a:k1\na:k2", "keys.txt")


def sha(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def test_load_keys_names_each_key_and_marks_only_the_admin(tmp_path):
    path = tmp_path / "keys.txt"
    path.write_text("carol:carol-key-0123456789\n")
    keys = load_keys(Settings(api_key="legacy-key-0123456789", api_keys="alice:alice-key-0123456789",
                              api_keys_file=str(path), admin_key="admin-key-0123456789"))
    assert keys == {sha("legacy-key-0123456789"): Caller("default", False),
                    sha("alice-key-0123456789"): Caller("alice", False),
                    sha("carol-key-0123456789"): Caller("carol", False),
                    sha("admin-key-0123456789"): Caller("admin", True)}
    assert load_keys(Settings()) == {}


def test_load_keys_refuses_reused_names_and_keys(tmp_path):
    with pytest.raises(ValueError, match="LTX2_API_KEYS: the key name 'default' is already used"):
        load_keys(Settings(api_key="k" * 16, api_keys="default:" + "j" * 16))
    with pytest.raises(ValueError, match="LTX2_ADMIN_KEY: the key named 'admin' is the same as another key"):
        load_keys(Settings(api_keys="a:" + "s" * 16, admin_key="s" * 16))
    path = tmp_path / "keys.txt"
    path.write_text("b:" + "t" * 16)
    with pytest.raises(ValueError, match=f"{path}: the key named 'b' is the same"):
        load_keys(Settings(api_keys="a:" + "t" * 16, api_keys_file=str(path)))
    with pytest.raises(ValueError, match="LTX2_API_KEYS_FILE: cannot read .*missing"):
        load_keys(Settings(api_keys_file=str(tmp_path / "missing")))


def test_keys_shorter_than_16_characters_are_warned_about(caplog):
    with caplog.at_level(logging.WARNING, logger="ltx2.security"):
        load_keys(Settings(api_keys="long:" + "x" * 16 + ",longer:" + "z" * 40))
    assert not caplog.records
    with caplog.at_level(logging.WARNING, logger="ltx2.security"):
        load_keys(Settings(api_keys="short:" + "y" * 15))
    assert [json.loads(r.getMessage()) for r in caplog.records] == [
        {"event": "short_api_key", "name": "short", "length": 15, "advice": "use 16 or more random characters"}]


# ---------------------------------------------------------------------------------------------
# The key check


@pytest.mark.parametrize("headers", [
    [(b"authorization", b"Bearer " + KEY.encode())],
    [(b"Authorization", b"  bearer   " + KEY.encode() + b"  ")],
    [(b"AUTHORIZATION", b"BEARER " + KEY.encode())],
    [(b"x-api-key", KEY.encode())],
    [(b"X-Api-Key", b" " + KEY.encode() + b" ")],
    [(b"accept", b"*/*"), (b"x-api-key", KEY.encode()), (b"authorization", b"Basic Zm9vOmJhcg==")],
    [(b"accept", b"Bearer x"), (b"x-api-key", KEY.encode()), (b"x-request-id", b"r1"), (b"x-real-ip", b"1.2.3.4"),
     (b"zz-token", KEY.encode()), (b"api-key", b"other")],  # only the two credential headers count
])
def test_the_right_key_passes_in_either_header(headers):
    app = App()
    sent, scope = call(SecurityMiddleware(app, api_key=KEY), headers)
    assert status(sent) == 200 and len(app.scopes) == 1
    assert caller_of(scope) == Caller("default")


@pytest.mark.parametrize("headers, error", [
    ([], MISSING_KEY),
    ([(b"authorization", b"Basic " + KEY.encode())], MISSING_KEY),  # another scheme is no credential
    ([(b"authorization", b"Bearer" + KEY.encode())], MISSING_KEY),
    ([(b"x-api-key", b"wrong")], INVALID_KEY),
    ([(b"accept", b"Bearer " + KEY.encode()), (b"a-key", KEY.encode())], MISSING_KEY),  # other headers are no key
    ([(b"x-real-ip", KEY.encode()), (b"x-z", b"Bearer " + KEY.encode())], MISSING_KEY),
    ([(b"authorization", b"Bearer " + KEY.upper().encode())], INVALID_KEY),
    ([(b"x-api-key", KEY.encode()), (b"x-api-key", KEY.encode())],
     "send exactly one credential (one Authorization: Bearer header or one X-API-Key header), not 2"),
    ([(b"x-api-key", b"guess"), (b"authorization", b"Bearer " + KEY.encode()), (b"x-api-key", b"other")],
     "send exactly one credential (one Authorization: Bearer header or one X-API-Key header), not 3"),
])
def test_a_missing_wrong_or_repeated_key_is_401_before_the_app(headers, error):
    app = App()
    sent, scope = call(SecurityMiddleware(app, api_key=KEY, max_body_mb=1), headers)
    assert status(sent) == 401 and app.scopes == []
    assert headers_of(sent)[b"www-authenticate"] == b"Bearer"
    assert headers_of(sent)[b"content-type"] == b"application/json"
    assert body_json(sent) == {"error": error, "code": "unauthorized"}
    assert caller_of(scope) == ANONYMOUS


def test_every_configured_key_is_recognised_as_its_own_caller():
    keys = {sha(f"key-{n}"): Caller(f"user{n}", n == 2) for n in range(4)}
    for n in range(4):
        app = App()
        sent, scope = call(SecurityMiddleware(app, keys=keys), [(b"x-api-key", f"key-{n}".encode())])
        assert status(sent) == 200 and caller_of(scope) == Caller(f"user{n}", n == 2)


def test_an_empty_api_key_means_an_open_server():
    app = App()
    sent, scope = call(SecurityMiddleware(app, api_key=""), [])
    assert status(sent) == 200 and "state" not in scope and caller_of(scope) == ANONYMOUS


def test_the_401_closes_the_connection_only_when_a_body_follows():
    mw = SecurityMiddleware(App(), api_key=KEY)
    for headers, closes in (([], False), ([(b"content-length", b"0")], False), ([(b"content-length", b" ")], False),
                            ([(b"host", b"x"), (b"user-agent", b"curl/8"), (b"x-api-key", b"bad"), (b"via", b"1.1")],
                             False),
                            ([(b"cookie", b"a=1"), (b"content-type", b"application/json")], False),
                            ([(b"accept", b"*/*"), (b"authorization", b"Basic eA=="), (b"connection", b"keep-alive"),
                              (b"content-encoding", b"gzip")], False),
                            ([(b"content-length", b"12")], True), ([(b"Content-Length", b"1")], True),
                            ([(b"Transfer-Encoding", b"chunked")], True)):
        sent, _ = call(mw, headers)
        assert status(sent) == 401
        assert ((b"connection", b"close") in sent[0]["headers"]) is closes, headers
        body = sent[1]["body"]
        assert headers_of(sent)[b"content-length"] == str(len(body)).encode()


@pytest.mark.parametrize("path, root_path, open_", [
    ("/health", "", True), ("/health/", "", False), ("/healthz", "", False), ("/metrics", "", False),
    ("/api/health", "/api", True), ("/api/metrics", "/api", False), ("/apihealth", "/api", False),
    ("/api", "/api", False), ("/health", "/api", True), ("/x/api/health", "/api", False),
    ("/xyz/health", "/api", False), ("/", "", False),
])
def test_open_paths_match_exactly_after_the_root_path(path, root_path, open_):
    app = App()
    # Rebuilt strings, as a server hands them over: equal to the literals, not the same objects.
    path, root_path = "".join(list(path)), "".join(list(root_path))
    sent, scope = call(SecurityMiddleware(app, api_key=KEY, open_paths=frozenset({"/health"})), [], path=path,
                       root_path=root_path)
    assert status(sent) == (200 if open_ else 401)
    assert caller_of(scope) == ANONYMOUS


def test_an_open_path_still_identifies_a_caller_with_a_key():
    app = App()
    _, scope = call(SecurityMiddleware(app, api_key=KEY, open_paths=frozenset({"/health"})),
                    [(b"x-api-key", KEY.encode())], path="/health")
    assert caller_of(scope) == Caller("default")


def test_websockets_need_the_key_too():
    app = App()
    sent, _ = call(SecurityMiddleware(app, api_key=KEY, max_body_mb=1), [(b"x-api-key", b"bad")], kind="websocket")
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": INVALID_KEY}] and app.scopes == []
    # The body limit is for HTTP bodies: a websocket handshake is never refused for a length it declares.
    sent, scope = call(SecurityMiddleware(app, api_key=KEY, max_body_mb=1),
                       [(b"x-api-key", KEY.encode()), (b"content-length", str(10 * MB).encode())], kind="websocket")
    assert sent == [] and app.scopes == [scope] and caller_of(scope) == Caller("default")


def test_lifespan_passes_through_untouched():
    app = App()
    sent, scope = call(SecurityMiddleware(app, api_key=KEY, max_body_mb=1), [], kind="lifespan")
    assert sent == [] and app.scopes == [scope] and "state" not in scope


# ---------------------------------------------------------------------------------------------
# The body limit


@pytest.mark.parametrize("limit_mb, length, refused", [
    (1, MB, False), (1, MB + 1, True), (0.5, MB // 2, False), (0.5, MB // 2 + 1, True), (2.25, 9 * MB // 4, False),
    (2.25, 9 * MB // 4 + 1, True),
])
def test_a_declared_length_over_the_limit_is_413_from_the_headers(limit_mb, length, refused):
    app = App()
    sent, _ = call(SecurityMiddleware(app, max_body_mb=limit_mb), [(b"content-length", str(length).encode())],
                   chunks=[b"x" * 10])
    if refused:
        assert status(sent) == 413 and app.scopes == []
        assert (b"connection", b"close") in sent[0]["headers"]
        assert body_json(sent) == {"code": "payload_too_large", "error": (
            f"the request body is {length / MB:.1f} MB; the limit is {limit_mb:g} MB (LTX2_MAX_BODY_MB)")}
    else:
        assert status(sent) == 200 and len(app.scopes) == 1


def test_the_413_message_shows_sizes_in_mb():
    sent, _ = call(SecurityMiddleware(App(), max_body_mb=1), [(b"content-length", str(60 * MB).encode())])
    assert body_json(sent)["error"] == "the request body is 60.0 MB; the limit is 1 MB (LTX2_MAX_BODY_MB)"


@pytest.mark.parametrize("sizes, over", [
    ([MB // 2, MB // 2], False),  # exactly the limit
    ([MB // 2, MB // 2, 1], True),
    ([MB + 1], True),
    ([1, 2, 3], False),
])
def test_a_streamed_body_is_counted_against_the_limit(sizes, over):
    app = App()
    sent, _ = call(SecurityMiddleware(app, max_body_mb=1), [(b"transfer-encoding", b"chunked")],
                   chunks=[b"a" * n for n in sizes])
    received = sum(len(m.get("body", b"")) for m in app.messages)
    if over:
        assert status(sent) == 413 and [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
        assert body_json(sent) == {"code": "payload_too_large",
                                   "error": "the request body is larger than the limit of 1 MB (LTX2_MAX_BODY_MB)"}
        assert received == sum(sizes[:-1]) and app.messages[-1] == {"type": "http.disconnect"}
    else:
        assert status(sent) == 200 and received == sum(sizes)


def test_a_malformed_or_small_declared_length_is_still_counted():
    for declared in (b"abc", b"10"):
        app = App()
        sent, _ = call(SecurityMiddleware(app, max_body_mb=1), [(b"Content-Length", declared)], chunks=[b"a" * (MB + 1)])
        assert status(sent) == 413 and app.messages == [{"type": "http.disconnect"}]


def test_other_messages_pass_and_are_not_counted():
    app = App()
    sent, _ = call(SecurityMiddleware(app, max_body_mb=1), [], chunks=[b"a" * MB],
                   extra_messages=[{"type": "http.custom", "body": b"z" * (MB + 1)},
                                   {"type": "http.trailers", "body": b"z" * (MB + 1)}])
    assert status(sent) == 200 and [m["type"] for m in app.messages] == ["http.custom", "http.trailers", "http.request"]


def test_an_app_that_answered_first_keeps_its_reply_and_gets_no_more_body():
    app = App(reply_first=True)
    sent, _ = call(SecurityMiddleware(app, max_body_mb=1), [], chunks=[b"a" * MB, b"b", b"c"])
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert status(sent) == 200 and sent[1]["body"] == b"app"
    assert [m["type"] for m in app.messages] == ["http.request", "http.disconnect"]


def test_after_the_413_the_app_reads_only_disconnects():
    pulled = []

    class Greedy(App):
        async def __call__(self, scope, receive, send):
            for _ in range(3):
                pulled.append(await receive())
            await send({"type": "http.response.start", "status": 500, "headers": []})

    sent, _ = call(SecurityMiddleware(Greedy(), max_body_mb=1), [], chunks=[b"a" * (MB + 1), b"b", b"c"])
    assert [m["type"] for m in pulled] == ["http.disconnect"] * 3
    assert [m.get("status") for m in sent] == [413, None]


def test_no_limit_and_no_key_reach_the_app_untouched():
    app = App()
    sent, _ = call(SecurityMiddleware(app), [(b"content-length", str(10**12).encode())], chunks=[b"a" * 5])
    assert status(sent) == 200 and app.messages[0]["body"] == b"a" * 5


# ---------------------------------------------------------------------------------------------
# Installed on an app: which routes are open, and the OpenAPI description


def make_app(**settings):
    app = FastAPI()

    @app.get("/health")
    def health():
        return {"ok": True}

    @app.get("/metrics")
    def metrics():
        return "m"

    @app.get("/page")
    def page():
        return "p"

    @app.get("/who")
    def who(request: Request):
        caller = caller_of(request)
        return {"name": caller.name, "admin": caller.admin}

    keys = install_security(app, Settings(**settings), pages=frozenset({"/page"}))
    return app, keys


@pytest.mark.parametrize("docs_public", [True, False])
def test_with_a_key_only_health_and_public_docs_are_open(docs_public):
    app, keys = make_app(api_key=KEY, docs_public=docs_public, max_body_mb=1)
    assert keys == {sha(KEY): Caller("default")}
    with TestClient(app) as client:
        assert client.get("/health").status_code == 200
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"X-API-Key": KEY}).status_code == 200
        for path in ("/docs", "/openapi.json", "/docs/oauth2-redirect", "/redoc", "/page"):
            assert client.get(path).status_code == (200 if docs_public else 401), path
        assert client.get("/who", headers={"Authorization": f"Bearer {KEY}"}).json() == {"name": "default",
                                                                                         "admin": False}
        schema = client.get("/openapi.json", headers={"X-API-Key": KEY}).json()
    assert schema["components"]["securitySchemes"] == {
        "BearerKey": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <key>"},
        "HeaderKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}
    assert schema["security"] == [{"BearerKey": []}, {"HeaderKey": []}]
    assert schema["paths"]["/health"]["get"]["security"] == []
    assert "security" not in schema["paths"]["/metrics"]["get"]


def test_without_keys_everything_is_open_and_the_schema_has_no_security():
    app, keys = make_app(max_body_mb=1)
    assert keys == {}
    with TestClient(app) as client:
        assert client.get("/metrics").status_code == 200
        assert client.get("/who").json() == {"name": None, "admin": False}
        schema = client.get("/openapi.json").json()
        assert client.post("/metrics", content=b"x" * (MB + 1)).status_code == 413
    assert "securitySchemes" not in schema.get("components", {}) and "security" not in schema


def test_the_admin_key_is_the_admin_caller():
    app, _ = make_app(admin_key="admin-key-0123456789")
    with TestClient(app) as client:
        assert client.get("/who", headers={"X-API-Key": "admin-key-0123456789"}).json() == {"name": "admin",
                                                                                             "admin": True}


def test_caller_of_reads_a_scope_or_a_request():
    assert caller_of({}) == ANONYMOUS and caller_of({"state": {}}) == ANONYMOUS
    assert caller_of({"state": {"ltx2_caller": Caller("x")}}) == Caller("x")
