"""Who may see and touch a job, against a real server with named keys: a job belongs to the key that
made it (others get 404), one admin key sees everything, /health shows no job ids without it, a
request carries exactly one credential, links follow --public-url, and HEAD works."""

from __future__ import annotations

import time

import httpx
import pytest
from servers import start_server, stop_server

from ltx2.serving.security import load_keys, parse_keys
from ltx2.settings import Settings

ALICE, BOB, ADMIN = "alice-key-0123456789abcdef", "bob-key-0123456789abcdef", "admin-key-0123456789abcdef"
CHEAP = {"prompt": "a boat", "width": 64, "height": 64, "num_frames": 9, "num_inference_steps": 1, "seed": 1}
SLOW = {"prompt": "a slow boat", "width": 288, "height": 512, "num_frames": 49, "num_inference_steps": 100, "seed": 2}
PUBLIC = "https://videos.example.com/ltx"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    out = tmp_path_factory.mktemp("access")
    keys = out / "keys.txt"
    keys.write_text(f"# the team\nalice:{ALICE}\nbob: {BOB}\n\n")
    proc, base = start_server(out / "output", out / "server.log", "--api-keys-file", str(keys),
                              "--admin-key", ADMIN, "--public-url", PUBLIC + "/")
    with httpx.Client(base_url=base, timeout=60) as http:
        yield http
    stop_server(proc)


def as_(key: str) -> dict:
    return {"X-API-Key": key}


def wait_for(http, job_id, key, statuses=("succeeded", "failed", "cancelled")):
    deadline = time.monotonic() + 60
    while True:
        view = http.get(f"/jobs/{job_id}", headers=as_(key)).json()
        if view["status"] in statuses or time.monotonic() > deadline:
            return view
        time.sleep(0.05)


def test_a_job_belongs_to_its_key_and_the_admin_sees_all(server):
    http = server
    created = http.post("/jobs", json=SLOW, headers={**as_(ALICE), "Host": "evil.example"})
    job = created.json()
    assert created.status_code == 202 and created.headers["location"] == f"{PUBLIC}/jobs/{job['id']}"
    assert job["links"]["video"] == f"{PUBLIC}/jobs/{job['id']}/video"  # not the Host the client sent
    wait_for(http, job["id"], ALICE, ("running",))

    missing = http.get("/jobs/0123456789abcdef", headers=as_(BOB))
    for method, path in (("GET", ""), ("DELETE", ""), ("GET", "/video"), ("GET", "/events")):
        other = http.request(method, f"/jobs/{job['id']}{path}", headers=as_(BOB))
        assert other.status_code == 404 and other.json()["code"] == "not_found", (method, path, other.text)
    assert missing.json()["error"].replace("0123456789abcdef", job["id"]) == other.json()["error"]

    health = http.get("/health").json()
    assert health["progress"] is not None and "job" not in health["progress"]
    assert job["id"] not in http.get("/health").text and "slow boat" not in http.get("/health").text
    assert http.get("/health", headers=as_(ALICE)).json()["progress"].get("job") is None
    assert http.get("/health", headers=as_(ADMIN)).json()["progress"]["job"] == job["id"]

    assert http.get(f"/jobs/{job['id']}", headers=as_(ADMIN)).status_code == 200
    assert http.delete(f"/jobs/{job['id']}", headers=as_(ADMIN)).json()["status"] == "cancelled"
    assert http.get(f"/jobs/{job['id']}", headers=as_(ALICE)).json()["status"] == "cancelled"

    done = http.post("/jobs", json=CHEAP, headers=as_(BOB)).json()["id"]
    assert wait_for(http, done, BOB)["status"] == "succeeded"
    head = http.head(f"/jobs/{done}/video", headers=as_(BOB))
    body = http.get(f"/jobs/{done}/video", headers=as_(BOB))
    assert head.status_code == 200 and head.content == b"" and head.headers["content-type"] == "video/mp4"
    assert int(head.headers["content-length"]) == len(body.content) > 1000
    assert http.head(f"/jobs/{done}/video", headers=as_(ALICE)).status_code == 404


def test_exactly_one_credential(server):
    http = server
    guesses = [("X-API-Key", f"guess-{i:04d}") for i in range(1000)] + [("X-API-Key", ALICE)]
    for headers in (guesses, [("X-API-Key", ALICE), ("X-API-Key", ALICE)],
                    [("X-API-Key", ALICE), ("Authorization", f"Bearer {ALICE}")]):
        r = http.get("/", headers=httpx.Headers(headers))
        assert r.status_code == 401 and "exactly one credential" in r.json()["error"], r.text
    assert http.get("/", headers={"Authorization": f"Bearer {ALICE}"}).status_code == 200
    assert http.get("/", headers=as_("nope")).status_code == 401
    head = http.head("/health")
    assert head.status_code == 200 and head.content == b""


def test_keys_files_are_read_strictly(tmp_path):
    assert parse_keys("a:k1, b:k2\n# c:k3\n", "x") == {"a": "k1", "b": "k2"}
    for text, phrase in (("just-a-key", "must be name:key"), ("a:k1\na:k2", "appears twice"),
                         ("bad name:k", "must be name:key"), ("a:", "must be name:key")):
        with pytest.raises(ValueError, match=phrase):
            parse_keys(text, "keys.txt")
    with pytest.raises(ValueError, match="same as another key"):
        load_keys(Settings(api_keys="a:same-key-0123456789", admin_key="same-key-0123456789"))
    with pytest.raises(ValueError, match="cannot read"):
        load_keys(Settings(api_keys_file=str(tmp_path / "missing")))
    keys = load_keys(Settings(api_key="legacy-key-0123456789", api_keys="a:k-0123456789abcdef"))
    assert sorted(c.name for c in keys.values()) == ["a", "default"]
