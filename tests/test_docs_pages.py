"""/docs served offline (Swagger UI's files from a package), each error response's own example, the
playground's files, GET / for API clients and browsers, and the Content-Type message."""

import re

import pytest

from ltx2.serving.docs import ASSETS

URL = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url\(\s*["']?([^"')]+)""")
EXTERNAL = re.compile(r"""(?:["'(=]\s*)(?:https?:)?//[A-Za-z0-9.-]+""")


def referenced(text):
    return [a or b for a, b in URL.findall(text)]


def test_docs_reference_no_external_host_and_their_files_are_served(client):
    html = client.get("/docs").text
    assert not EXTERNAL.search(html), EXTERNAL.search(html)
    urls = referenced(html)
    assert {f"/docs/assets/{name}" for name in ASSETS} <= set(urls), urls
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, url
    assert '"validatorUrl": null' in html  # no badge fetched from validator.swagger.io
    assert client.get("/docs/assets/swagger-ui-bundle.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/docs/assets/index.html").status_code == 404


def test_the_playground_and_its_files_load_nothing_from_elsewhere(client):
    page = client.get("/playground")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for url in referenced(page.text):
        if url in ("docs", "openapi.json"):
            continue
        response = client.get(f"/{url}")
        assert response.status_code == 200, url
        assert not EXTERNAL.search(response.text), (url, EXTERNAL.search(response.text))
    assert not EXTERNAL.search(page.text)
    assert "href=\"docs\"" in page.text  # linked to the docs, and the docs link back
    assert "[the playground](/playground)" in client.get("/openapi.json").json()["info"]["description"]


def test_each_error_response_has_its_own_realistic_example(client):
    responses = client.get("/openapi.json").json()["paths"]["/generate"]["post"]["responses"]
    codes = {"401": "unauthorized", "409": "cancelled", "413": "payload_too_large", "422": "invalid_request",
             "429": "queue_full", "500": "invalid_output", "503": "model_not_loaded", "504": "timeout",
             "507": "out_of_memory"}
    examples = {status: responses[status]["content"]["application/json"]["example"] for status in codes}
    assert len({e["error"] for e in examples.values()}) == len(codes)  # no two alike
    for status, example in examples.items():
        assert example["code"] == codes[status] and example["error"], status
    assert examples["422"]["field"] == "num_frames" and examples["413"]["field"] == "image_start"
    assert "Retry-After" not in examples["429"]["error"] and "retry in about 42 s" in examples["429"]["error"]


def test_get_root_is_json_for_api_clients_and_sends_browsers_to_the_playground(client):
    for accept in (None, "*/*", "application/json"):
        headers = {"accept": accept} if accept else {}
        r = client.get("/", headers=headers)
        assert r.status_code == 200 and r.json()["name"] == "ltx2", accept
    r = client.get("/", headers={"accept": "text/html,application/xhtml+xml,*/*;q=0.8"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].endswith("/playground")


@pytest.mark.parametrize("route", ["/generate", "/jobs"])
def test_a_body_not_sent_as_json_says_so(client, route):
    # What curl -d without -H sends: the right JSON with the wrong Content-Type.
    r = client.post(route, content=b'{"prompt": "a cat"}',
                    headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 422 and r.json()["field"] == "body"
    assert r.json()["error"] == ("the request body must be sent as application/json; this request has "
                                 "Content-Type 'application/x-www-form-urlencoded' "
                                 "(curl: -H 'Content-Type: application/json')")
    r = client.post(route, content=b'{"prompt": "a cat"}', headers={"content-type": ""})
    assert "this request has no Content-Type" in r.json()["error"]
