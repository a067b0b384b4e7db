"""Each route family answers every error in its own protocol's shape, including the errors no route
produces: the API key's 401 and the body limit's 413 (the security middleware), a path or method that
does not exist (404/405) and an internal error (500).

    /v1/videos*, /v1/models     OpenAI's {"error": {"message", "type", "param", "code"}}
    /v1/generations*            the LTX API's {"type": "error", "error": {"type", "message", "code", "param"}}
    everything else             ours: {"error", "code", "field"}
"""

from __future__ import annotations

from fastapi.responses import Response

from . import ltx_api, openai_api


def reshape(path: str, status: int, body: dict) -> dict:
    """Our error body for `path` in its protocol's shape (the status stays: the middleware's 401 and 413
    are the same code in every protocol)."""
    if path.startswith(openai_api.PREFIXES):
        return openai_api.openai_body(status, body)
    if path.startswith(ltx_api.PREFIX):
        return ltx_api.ltx_body(status, body)
    return body


def reshape_response(path: str, response: Response) -> Response:
    """An error response of ours for `path` in its protocol's shape, with that protocol's status."""
    if path.startswith(openai_api.PREFIXES):
        return openai_api.as_openai_error(response)
    if path.startswith(ltx_api.PREFIX):
        return ltx_api.as_ltx_error(response)
    return response
