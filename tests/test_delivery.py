"""Bounded responses and cheap refusals, against a real server process: a result streamed to slow
readers without a copy each, event streams that cost nothing while they wait, a full queue refused
before the body is read, a body of a million fields refused in a blink with a short answer."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time

import hostile
import httpx
import pytest
from servers import start_server, stop_server
from servers import wait_for_job as wait_for

CHEAP = {"prompt": "a boat", "width": 64, "height": 64, "num_frames": 9, "num_inference_steps": 1, "seed": 1}
LONG = {"prompt": "a long boat", "num_frames": 121, "num_inference_steps": 1, "seed": 4}  # ~8 MB of noise


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    out = tmp_path_factory.mktemp("delivery")
    proc, base = start_server(out / "output", out / "server.log", "--queue-size", "2", "--allow-private-urls", "true",
                               # 300 event streams from this one address: no per-address cap here
                               "--max-connections-per-client", "0")
    with httpx.Client(base_url=base, timeout=120) as http:
        yield proc, base, http
    stop_server(proc)


def test_slow_readers_of_a_data_uri_result_share_the_file(server):
    proc, base, http = server
    job = http.post("/jobs", json={**LONG, "response_format": "data_uri"}).json()["id"]
    assert wait_for(http, job)["status"] == "succeeded"
    mp4 = http.get(f"/jobs/{job}/video").content
    whole = http.get(f"/jobs/{job}")
    assert int(whole.headers["content-length"]) == len(whole.content)
    assert base64.b64decode(whole.json()["result"]["video"].split(",", 1)[1]) == mp4

    time.sleep(1)
    hostile.reset_peak_rss(proc.pid)
    before = hostile.rss_mb(proc.pid)
    readers = []
    for _ in range(20):  # each reads 4 KB now and then: the server must not buffer the rest for it
        sock = socket.create_connection(hostile.host_port(base))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(hostile.request_bytes("GET", f"/jobs/{job}"))
        readers.append(sock)
    for _ in range(20):
        for sock in readers:
            sock.settimeout(0.001)
            try:
                sock.recv(4096)
            except OSError:
                pass
        time.sleep(0.1)
    grew = hostile.peak_rss_mb(proc.pid) - before
    for sock in readers:
        sock.close()
    print(f"\n20 slow readers of a {len(mp4) / 1e6:.1f} MB data_uri result: peak RSS +{grew:.0f} MB")
    # Each reader holds one chunk and its socket buffers (well under 1 MB), not the file and its encoding.
    assert grew < 40, grew
    assert http.post("/generate", json=CHEAP).status_code == 200


def test_event_streams_wait_without_polling_and_all_get_the_result(server):
    proc, base, http = server
    drip = hostile.DripServer(hostile.png(), interval=1.0)
    try:
        # Two jobs whose image URL drips: the first is fetching, the second waits its turn. Neither uses
        # the CPU, so what the server spends now is what the waiting event streams cost.
        ahead = http.post("/jobs", json={**CHEAP, "image_start": drip.url}).json()["id"]
        queued = http.post("/jobs", json={**CHEAP, "image_start": drip.url}).json()["id"]
        streams = []
        for _ in range(300):
            sock = socket.create_connection(hostile.host_port(base))
            sock.sendall(hostile.request_bytes("GET", f"/jobs/{queued}/events"))
            streams.append(sock)
        time.sleep(1.5)
        start = hostile.cpu_seconds(proc.pid)
        time.sleep(3)
        cpu = (hostile.cpu_seconds(proc.pid) - start) / 3
        print(f"\n300 event streams on a queued job: {cpu:.3f} core-seconds per second")
        assert cpu < 0.05, cpu
        http.delete(f"/jobs/{queued}")
        deadline = time.monotonic() + 10
        got = 0
        for sock in streams:
            data = b""
            while b"\n\n" not in data.partition(b"event: result")[2] and time.monotonic() < deadline:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                try:
                    chunk = sock.recv(65536)
                except TimeoutError:
                    break
                if not chunk:
                    break
                data += chunk
            got += b"event: result" in data and b'"cancelled"' in data
            sock.close()
        assert got == 300
        http.delete(f"/jobs/{ahead}")
    finally:
        drip.close()


def test_a_full_queue_refuses_before_reading_the_body(server):
    proc, base, http = server
    drip = hostile.DripServer(hostile.png(), interval=1.0)
    try:
        held = []
        while len(held) < 5:  # jobs fetching a dripping URL until the queue is full
            r = http.post("/jobs", json={**CHEAP, "image_start": drip.url})
            if r.status_code == 429:
                break
            held.append(r.json()["id"])
        assert http.get("/health").json()["queue"]["waiting"] == 2  # full
        with socket.create_connection(hostile.host_port(base)) as sock:
            sock.sendall(b"POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 60000000\r\n\r\n")  # and not one byte of the 60 MB body
            start = time.monotonic()
            status, headers, body = hostile.read_response(sock, timeout=10)
            took = time.monotonic() - start
        assert status == 429 and json.loads(body)["code"] == "queue_full"
        assert headers["connection"] == "close" and int(headers["retry-after"]) >= 1
        assert took < 2, took
        for job in held:
            http.delete(f"/jobs/{job}")
    finally:
        drip.close()
    assert http.post("/generate", json=CHEAP).status_code == 200


def test_a_million_unknown_fields_get_a_short_answer_at_once(server):
    proc, base, http = server
    body = hostile.many_keys_body(1_000_000)  # 14 MB
    slowest, done = 0.0, threading.Event()

    def ping():
        nonlocal slowest
        with httpx.Client(base_url=base, timeout=30) as other:
            while not done.is_set():
                start = time.monotonic()
                other.get("/health")
                slowest = max(slowest, time.monotonic() - start)
                time.sleep(0.02)

    pinger = threading.Thread(target=ping)
    pinger.start()
    try:
        start = time.monotonic()
        r = http.post("/generate", content=body, headers={"Content-Type": "application/json"})
        took = time.monotonic() - start
    finally:
        done.set()
        pinger.join()
    print(f"\n1M unknown keys: {r.status_code} in {took:.2f} s, {len(r.content)} bytes; slowest /health {slowest:.2f} s")
    assert r.status_code == 422 and r.json()["field"] == "body" and "JSON keys" in r.json()["error"]
    assert len(r.content) < 16_000 and took < 5 and slowest < 2
    # Fewer unknown fields than the cheap check's limit still get every problem named, but a bounded list.
    r = http.post("/generate", json={**{f"k{i}": 1 for i in range(500)}, "prompt": "x"})
    assert r.status_code == 422 and len(r.json()["errors"]) <= 21 and len(r.content) < 16_000
    assert "more problems" in r.json()["error"]
