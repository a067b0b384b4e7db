"""/playground: a web page to try the server (plain HTML, CSS and JS from the package: no build step,
nothing loaded from elsewhere). It uses the public job API: POST /jobs, GET /jobs/{id}/events, the video."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse

STATIC = Path(__file__).parent / "static"
PAGE_URL = "/playground"
FILES = {"playground.js": "text/javascript", "playground.css": "text/css", "train.js": "text/javascript"}
# The page and its files are open without the API key when --docs-public (the page asks for the key).
PAGES = frozenset({PAGE_URL, *(f"{PAGE_URL}/{name}" for name in FILES)})


def install_playground(app: FastAPI) -> None:
    @app.get(PAGE_URL, include_in_schema=False)
    async def playground() -> FileResponse:
        return FileResponse(STATIC / "playground.html", media_type="text/html")

    def serve(name: str, media_type: str) -> None:
        async def static_file() -> FileResponse:
            return FileResponse(STATIC / name, media_type=media_type)

        app.get(f"{PAGE_URL}/{name}", include_in_schema=False, name=f"playground_{name}")(static_file)

    for name, media_type in FILES.items():
        serve(name, media_type)
