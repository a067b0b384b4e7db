"""/docs that work without the internet: Swagger UI's files are served by this app, from the
fastapi-offline package (a maintained copy of swagger-ui-dist), never from a CDN."""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse
from starlette.exceptions import HTTPException

SWAGGER_DIR = Path(fastapi_offline.__file__).parent / "static"
ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css", "favicon.png": "image/png"}
DOCS_URL = "/docs"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"
ASSET_URL = "/docs/assets/"
# Swagger UI would show a badge from validator.swagger.io: no request leaves for another host.
PARAMETERS = {"validatorUrl": None}
# Open without the API key when --docs-public (as /openapi.json is).
PAGES = frozenset({DOCS_URL, OAUTH2_REDIRECT_URL, *(ASSET_URL + name for name in ASSETS)})


def install_docs(app: FastAPI) -> None:
    """Swagger UI at /docs. The app must be built with docs_url=None (FastAPI's own page loads a CDN)."""

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=root + app.openapi_url, title=f"{app.title} - API docs",
            oauth2_redirect_url=root + OAUTH2_REDIRECT_URL,
            swagger_js_url=f"{root}{ASSET_URL}swagger-ui-bundle.js", swagger_css_url=f"{root}{ASSET_URL}swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSET_URL}favicon.png", swagger_ui_parameters=PARAMETERS | (app.swagger_ui_parameters or {}),
        )

    @app.get(OAUTH2_REDIRECT_URL, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(ASSET_URL + "{name}", include_in_schema=False)
    async def swagger_asset(name: str) -> FileResponse:
        if name not in ASSETS:
            raise HTTPException(404, f"no docs asset {name!r}")
        return FileResponse(SWAGGER_DIR / name, media_type=ASSETS[name],
                            headers={"Cache-Control": "public, max-age=86400"})
