"""With an API key set, every route the app serves needs it, except /health and, when the docs are
public, the pages for people (/docs, /openapi.json, /playground and their files).

The routes are read from the app itself, so a route added later is covered without editing this test.
"""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from starlette.routing import Mount, Route

from ltx2.serving.app import create_app
from ltx2.serving.docs import PAGES as DOCS_PAGES
from ltx2.serving.playground import PAGES as PLAYGROUND_PAGES
from ltx2.settings import Settings

KEY = "k3y-for-routes"
PEOPLE_PAGES = ("/docs", "/openapi.json", "/redoc", "/playground")  # prefixes of what may be public


def routes(app) -> list[tuple[str, str]]:
    return _routes(app.routes, "")


def _routes(table, prefix: str) -> list[tuple[str, str]]:
    out = []
    for route in table:
        included = getattr(route, "original_router", None)  # FastAPI 0.16x keeps an included router whole
        if included is not None:
            out += _routes(included.routes, prefix + route.include_context.prefix)
        elif isinstance(route, Mount):
            out.append(("GET", prefix + route.path.rstrip("/") + "/x"))
        elif isinstance(route, Route):
            path = re.sub(r"\{[^}]+\}", "0" * 32, prefix + route.path)  # a job id or a file name that is not there
            for method in sorted(route.methods or {"GET"}):
                if method != "HEAD":
                    out.append((method, path))
    return out


@pytest.fixture(scope="module", params=[True, False], ids=["docs-public", "docs-private"])
def keyed(request, model, tmp_path_factory):
    settings = Settings(output_dir=str(tmp_path_factory.mktemp("output")), api_key=KEY, docs_public=request.param)
    app = create_app(settings, model=model)
    with TestClient(app) as client:
        yield client, app, request.param


@pytest.mark.slow
def test_every_route_but_health_needs_the_key(keyed):
    client, app, docs_public = keyed
    served = routes(app)
    assert ("GET", "/metrics") in served and ("POST", "/generate") in served  # the list is the app's
    pages = DOCS_PAGES | PLAYGROUND_PAGES | {"/docs", "/openapi.json", "/docs/oauth2-redirect", "/redoc"}
    assert all(p.startswith(PEOPLE_PAGES) for p in pages), sorted(pages)  # never an API route
    for method, path in served:
        open_route = path == "/health" or (docs_public and path in pages)
        r = client.request(method, path)
        if open_route:
            assert r.status_code != 401, (method, path)
        else:
            assert r.status_code == 401, (method, path, r.status_code)
            body = r.json()  # each protocol's own shape: ours, OpenAI's, the LTX API's
            assert (body["code"] if isinstance(body["error"], str) else body["error"]["code"]) == "unauthorized"


def test_metrics_with_the_key(keyed):
    client, _, _ = keyed
    assert client.get("/metrics", headers={"X-API-Key": KEY}).status_code == 200
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
