"""`ltx2.Client`: submit a video to an ltx2 server's job API, follow its progress, save the file.

    from ltx2 import Client

    client = Client("http://127.0.0.1:8000")
    result = client.generate("a red fox in snow", num_frames=49, output="fox.mp4",
                             on_progress=lambda job: print(job["status"], job["step"], "/", job["total"]))

It speaks the routes any HTTP client can (POST /jobs, GET /jobs/{id}/events as server-sent events,
GET /jobs/{id}/video) and needs only httpx: no torch, nothing of the model.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx

TERMINAL = ("succeeded", "failed", "cancelled")
CANCEL_WAIT = 1.5  # seconds Ctrl-C waits for the cancel to be sent (its answer comes when the job stops)
ProgressCallback = Callable[[dict[str, Any]], None]
"""Called with the job (as GET /jobs/{id} shows it: status, position, step, total, ...) on each change."""


class APIError(Exception):
    """The server refused a request or a job failed: its message (the API's `error`), `code` and `field`."""

    def __init__(self, status: int, body: Any):
        body = body if isinstance(body, dict) else {"error": str(body)}
        self.status = status  # the HTTP status; for a failed job, that of the request that saw it
        self.error = body.get("error") or f"HTTP {status}"
        self.code = body.get("code")
        self.field = body.get("field")
        self.body = body
        super().__init__(self.error)


class Client:
    """One ltx2 server. `api_key` is its --api-key; `timeout` bounds each request (the event stream
    reconnects after that long without news instead of failing)."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000", *, api_key: str | None = None,
                 timeout: float = 60.0, http: httpx.Client | None = None):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._own_http = http is None
        self.http = http or httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _json(self, response: httpx.Response) -> dict:
        try:
            body = response.json()
        except ValueError:
            body = {"error": response.text[:500] or response.reason_phrase}
        if response.status_code >= 400:
            raise APIError(response.status_code, body)
        return body

    # ------------------------------------------------------------------------------------ the routes

    def submit(self, request: dict[str, Any] | None = None, **fields: Any) -> dict:
        """Queue a job (POST /jobs): `request` and/or the request's fields as keywords. Returns the job."""
        return self._json(self.http.post("/jobs", json={**(request or {}), **fields}))

    def job(self, job_id: str) -> dict:
        return self._json(self.http.get(f"/jobs/{job_id}"))

    def cancel(self, job_id: str) -> dict:
        return self._json(self.http.delete(f"/jobs/{job_id}"))

    def cancel_in_background(self, job_id: str, wait: float = CANCEL_WAIT) -> threading.Thread:
        """Ask the server to cancel, waiting only until the request is sent (at most `wait` seconds). The
        server acts on the DELETE as it arrives but answers once a running job has stopped (after a VAE
        decode, that can be half a minute), so the answer is left to a thread: Ctrl-C returns at once
        and the cancel goes on. A client made here sends it on a connection of its own, so closing this
        client does not cut it off; one given as `http` (its own transport) sends it itself."""
        sent = threading.Event()

        def trace(name: str, info: dict) -> None:
            if name.endswith("send_request_body.complete"):
                sent.set()

        def send() -> None:
            try:
                if self._own_http:
                    with httpx.Client(base_url=self.http.base_url, headers=self.http.headers,
                                      timeout=httpx.Timeout(60.0, connect=wait)) as http:
                        http.delete(f"/jobs/{job_id}", extensions={"trace": trace})
                else:
                    self.http.delete(f"/jobs/{job_id}", extensions={"trace": trace})
            except httpx.HTTPError:
                pass  # the server is gone or unreachable: nothing is left to cancel there
            finally:
                sent.set()

        thread = threading.Thread(target=send, name=f"ltx2-cancel-{job_id}", daemon=True)
        thread.start()
        sent.wait(wait)
        return thread

    def events(self, job_id: str, reconnects: int = 5, route: str = "jobs") -> Iterator[dict]:
        """The job as it changes, from its server-sent events, ending with the finished job. A stream
        that breaks or stays silent longer than the timeout (a long wait in the queue) is reopened;
        the server then sends the job's current state first."""
        failures = 0
        while True:
            try:
                with self.http.stream("GET", f"/{route}/{job_id}/events",
                                      headers={"Accept": "text/event-stream"}) as response:
                    if response.status_code >= 400:
                        response.read()
                        self._json(response)
                    for kind, job in _server_sent_events(response.iter_lines()):
                        failures = 0
                        yield job
                        if kind == "result" or job.get("status") in TERMINAL:
                            return
            except httpx.TransportError:  # a silent stream (ReadTimeout) or a broken one
                failures += 1
                if failures > reconnects:
                    raise
                time.sleep(min(failures - 1, 5))

    def wait(self, job_id: str, on_progress: ProgressCallback | None = None) -> dict:
        """Follow a job to its end; returns it once it succeeded, raises APIError when it did not."""
        last, job = None, {}
        for job in self.events(job_id):
            seen = (job.get("status"), job.get("position"), job.get("step"), job.get("total"))
            if on_progress is not None and seen != last:
                on_progress(job)
            last = seen
        if job.get("status") != "succeeded":
            error = job.get("error") or {"error": f"job {job_id} was {job.get('status')}", "code": job.get("status")}
            raise APIError(409 if job.get("status") == "cancelled" else 500, error)
        return job

    def download(self, job_id: str, output: str | os.PathLike | None = None) -> str:
        """Save the job's video (GET /jobs/{id}/video) to `output`, or to the server's file name (the job
        id and the format's extension) in the current directory. Written whole or not at all."""
        with self.http.stream("GET", f"/jobs/{job_id}/video") as response:
            if response.status_code >= 400:
                response.read()
                self._json(response)
            if output is None:
                found = re.search(r'filename="?([^";]+)"?', response.headers.get("content-disposition", ""))
                output = os.path.basename(found[1]) if found else job_id
            path = os.fspath(output)
            fd, part = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".ltx2-", suffix=".part")
            try:
                with os.fdopen(fd, "wb") as fh:
                    for chunk in response.iter_bytes():
                        fh.write(chunk)
                os.chmod(part, 0o666 & ~_umask())  # as open() would have made it, not mkstemp's 0600
                os.replace(part, path)
            except BaseException:
                os.unlink(part)
                raise
        return path

    # ---------------------------------------------------------------------------------- LoRA training

    def submit_training(self, dataset: str | os.PathLike, name: str, **fields: Any) -> dict:
        """Queue a LoRA training (POST /trainings): `dataset` a local zip (uploaded), or an http(s) URL or a
        dataset name under the server's <models dir>/datasets/. Returns the training."""
        if os.path.isfile(dataset):
            with open(dataset, "rb") as fh:
                form = {k: str(v) for k, v in {"name": name, **fields}.items() if v is not None}
                return self._json(self.http.post("/trainings", data=form, timeout=None,
                                                 files={"dataset": (os.path.basename(dataset), fh, "application/zip")}))
        return self._json(self.http.post("/trainings", json={"dataset": str(dataset), "name": name, **fields}))

    def training(self, training_id: str) -> dict:
        return self._json(self.http.get(f"/trainings/{training_id}"))

    def cancel_training(self, training_id: str) -> dict:
        """Stop a training; its last checkpoint stays in <models dir>/loras/."""
        return self._json(self.http.delete(f"/trainings/{training_id}", timeout=90))

    def train(self, dataset: str | os.PathLike, name: str, on_progress: ProgressCallback | None = None,
              **fields: Any) -> dict:
        """Submit a training and follow it to its end (step, loss, ETA to `on_progress`); returns the finished
        training, whose LoRA is then usable as `loras=[{"path": name}]`. Ctrl-C cancels it on the server."""
        training = self.submit_training(dataset, name, **fields)
        try:
            for training in self.events(training["id"], route="trainings"):
                if on_progress is not None:
                    on_progress(training)
        except KeyboardInterrupt:
            self.cancel_training(training["id"])
            raise
        if training.get("status") != "succeeded":
            raise APIError(409 if training.get("status") == "cancelled" else training.get("error_status") or 500,
                           training.get("error") or {"error": f"training {training['id']} was {training.get('status')}"})
        return training

    # ------------------------------------------------------------------------------------ all at once

    def generate(self, prompt: str | None = None, *, output: str | os.PathLike | None = None,
                 on_progress: ProgressCallback | None = None, request: dict[str, Any] | None = None,
                 **fields: Any) -> dict:
        """Submit, follow, save: returns the response's fields (seed, resolution, timings, ...) with
        `output`, the path written. Interrupted (Ctrl-C), the job is cancelled on the server."""
        body = {**(request or {}), **fields}
        if prompt is not None:
            body["prompt"] = prompt
        job = self.submit(body)
        try:
            done = self.wait(job["id"], on_progress)
        except KeyboardInterrupt:
            self.cancel_in_background(job["id"])
            raise
        path = self.download(job["id"], output)
        return {**(done.get("result") or {}), "id": job["id"], "output": path}


def _umask() -> int:
    umask = os.umask(0)  # reading it means setting it: put it back at once
    os.umask(umask)
    return umask


def _server_sent_events(lines: Iterator[str]) -> Iterator[tuple[str, dict]]:
    """(event, data as JSON) per event of a text/event-stream."""
    kind, data = "message", []
    for line in lines:
        if not line:
            if data:
                yield kind, json.loads("\n".join(data))
            kind, data = "message", []
        elif line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())
