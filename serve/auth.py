"""What guards the HTTP API before a route runs: the API key, CORS and the request-body size limit.

All three are ASGI middleware around the FastAPI app, so they also cover /docs and /openapi.json, and
their answers (401, 413) have the same `{"detail": str}` body as the routes' errors.
"""

from __future__ import annotations

import hmac
import logging
import os

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse

from distill.config.pipeline import ServeConfig

log = logging.getLogger(__name__)
API_KEY_HEADER = "X-API-Key"
OPEN_PATHS = ("/healthz", "/")  # the page is static HTML holding no data; it sends the key itself


def read_api_key(env_name: str | None) -> str | None:
    """The key from environment variable `env_name` (None: no auth); a named but empty variable is an error."""
    if not env_name:
        return None
    key = os.environ.get(env_name)
    if not key:
        raise RuntimeError(f"serve.api_key_env is {env_name!r} but that environment variable is empty or missing "
                           "in the Api replica (set it on the nodes or in runtime_env.env_vars)")
    return key


def install_guards(app: FastAPI, cfg: ServeConfig, api_key: str | None) -> None:
    """Add the size limit, the key check and CORS, in that order from the inside out."""
    # Starlette runs the last added middleware first: CORS outermost, so 401/413 answers carry CORS headers.
    from serve.uploads import search_body_limit

    # /search bodies may carry an uploaded reference image (serve.uploads checks its own size and names the field).
    hint = f" (an uploaded query.reference_image may have at most {cfg.max_image_bytes} bytes)"
    app.add_middleware(BodySizeLimit, max_bytes=cfg.max_body_bytes,
                       per_path={"/search": (search_body_limit(cfg), hint)})
    if api_key:
        app.add_middleware(ApiKeyAuth, key=api_key)
    if cfg.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=cfg.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Content-Type", API_KEY_HEADER, "Authorization"])


class BodySizeLimit:
    """Reject request bodies above `max_bytes` (`per_path`: other limits for some routes) with 413, by
    Content-Length or while streaming."""

    def __init__(self, app, max_bytes: int, per_path: dict[str, tuple[int, str]] | None = None):
        self.app, self.default, self.per_path = app, (max_bytes, ""), dict(per_path or {})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit, hint = self.per_path.get(_route_path(scope), self.default)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            return await self._too_large(send, limit, hint)
        if length is not None:
            return await self.app(scope, receive, send)
        # No Content-Length (chunked): buffer up to the limit, then replay to the app.
        messages, total = [], 0
        while True:
            message = await receive()
            messages.append(message)
            total += len(message.get("body", b""))
            if total > limit:
                return await self._too_large(send, limit, hint)
            if message["type"] != "http.request" or not message.get("more_body"):
                break

        async def replay():
            return messages.pop(0) if messages else await receive()

        return await self.app(scope, replay, send)

    async def _too_large(self, send, limit: int, hint: str = "") -> None:
        await send_detail(send, 413, f"request body larger than {limit} bytes{hint}")


class ApiKeyAuth:
    """Require `X-API-Key` on every route but the open ones (health, the static page, CORS preflight)."""

    def __init__(self, app, key: str):
        self.app, self.key = app, key.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope.get("method") != "OPTIONS" and not _is_open(scope):
            given = dict(scope.get("headers") or []).get(API_KEY_HEADER.lower().encode(), b"")
            if not hmac.compare_digest(given, self.key):
                return await send_detail(send, 401, f"missing or wrong {API_KEY_HEADER} header")
        return await self.app(scope, receive, send)


def _route_path(scope) -> str:
    path, root = scope["path"], scope.get("root_path", "")
    if root and path.startswith(root):  # behind a Serve route_prefix
        path = path[len(root):] or "/"
    return path


def _is_open(scope) -> bool:
    return _route_path(scope) in OPEN_PATHS


async def send_detail(send, status: int, message: str) -> None:
    """Answer with `{"detail": message}`, the body every non-422 error of the API has."""
    resp = JSONResponse({"detail": message}, status_code=status)
    await resp({"type": "http"}, None, send)
