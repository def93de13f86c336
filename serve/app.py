"""The retriever as a Ray Serve application: three separately scalable deployments.

    Api (FastAPI ingress) --> QueryEncoder (frozen text tower, @serve.batch)
                          --> ImageIndex  (FAISS index + ids, catalog thumbnails)

Development:  serve run serve.app:build_app index_dir=runs/embedded/index
Cluster:      serve deploy serve/serve_config.yaml   (replicas, autoscaling, health checks)

Versions and hot swap: the index root holds versions and a CURRENT pointer (distill.index). Each
request is served with one version end to end: the ingress picks the version, and the encoder and
index load it on first use (keeping the previous one). The ingress notices a new CURRENT (or a
`user_config: {index_version: ...}` from `serve deploy`), warms the new version up in both
deployments, then switches; a version that fails to load is reported on /healthz and never served.

Deliberately no `from __future__ import annotations`: FastAPI resolves the request models defined
inside `create_api` from the route signatures, which needs real annotation objects.
"""

import asyncio
import base64
import hmac
import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Union
from urllib.parse import quote

import numpy as np
import yaml
from fastapi import FastAPI, HTTPException, Path as PathParam, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator
from ray import serve
from ray.serve.handle import DeploymentHandle

from distill import index as idx
from distill.settings import ServeConfig, load_pipeline_config

log = logging.getLogger("ray.serve")
STATIC = Path(__file__).parent / "static"
OPEN_PATHS = ("/healthz", "/")  # the page is static HTML holding no data; it sends the key itself
MAX_ITEM_ID_CHARS = 512


# ------------------------------------------------------------------------------------- version cache


class VersionCache:
    """Loaded versions (LRU, `keep` of them); a version loads once even under concurrent requests."""

    def __init__(self, load: Callable[[str], Any], validate: Callable[[Any], None] | None = None, keep: int = 2):
        self._load, self._validate, self.keep = load, validate, keep
        self._items: "OrderedDict[str, Any]" = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}

    def put(self, version: str, value: Any) -> None:
        self._items[version] = value
        self._items.move_to_end(version)
        while len(self._items) > self.keep:
            self._items.popitem(last=False)

    def loaded(self) -> list[Any]:
        return list(self._items.values())

    async def get(self, version: str) -> Any:
        if version not in self._items:
            lock = self._locks.setdefault(version, asyncio.Lock())
            async with lock:
                if version not in self._items:
                    # Load (and validate) off the event loop so requests on the old version keep flowing.
                    value = await asyncio.to_thread(self._load_checked, version)
                    self.put(version, value)
            self._locks.pop(version, None)
        self._items.move_to_end(version)
        return self._items[version]

    def _load_checked(self, version: str) -> Any:
        value = self._load(version)
        if self._validate is not None:
            self._validate(value)
        return value


# -------------------------------------------------------------------------------------- deployments


@serve.deployment(max_ongoing_requests=64, ray_actor_options={"num_cpus": 0.5},
                  health_check_period_s=10, health_check_timeout_s=30)
class QueryEncoder:
    """The student's frozen text tower; queries are batched across requests with @serve.batch."""

    def __init__(self, index_dir: str, max_batch_size: int = 16, batch_wait_s: float = 0.005):
        self.index_dir = index_dir
        self.models = VersionCache(self._load_model)
        version = idx.current_version(index_dir)
        self.models.put(version, self._load_model(version))
        self.embed.set_max_batch_size(max_batch_size)
        self.embed.set_batch_wait_timeout_s(batch_wait_s)

    def _load_model(self, version: str) -> dict:
        from distill.student import load_student

        manifest = idx.read_index_manifest(self.index_dir, version)
        student = load_student(manifest["model"]["dir"]).eval()
        return {"version": version, "student": student, "dim": manifest["embed_dim"], "model": manifest["model"]}

    def check_health(self) -> None:
        for m in self.models.loaded():
            got = int(m["student"].encode_texts(["health check"]).shape[-1])
            if got != m["dim"]:
                raise RuntimeError(f"encoder for index {m['version']} returns {got}-d vectors, the index expects {m['dim']}")

    async def prepare(self, version: str) -> dict:
        m = await self.models.get(version)
        return {"version": version, "dim": m["dim"], "model": m["model"]["dir"]}

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def embed(self, texts: list[str], versions: list[str]) -> list[tuple[np.ndarray, int]]:
        out: list = [None] * len(texts)
        for version in dict.fromkeys(versions):
            rows = [i for i, v in enumerate(versions) if v == version]
            m = await self.models.get(version)
            batch = [texts[i] for i in rows]
            vecs, tokens = await asyncio.to_thread(_encode, m["student"], batch)
            for j, i in enumerate(rows):
                out[i] = (vecs[j], tokens[j])
        return out


def _encode(student, texts: list[str]) -> tuple[np.ndarray, list[int]]:
    vecs = student.encode_texts(texts).numpy().astype(np.float32)
    tokens = student.tokenizer(texts)
    return vecs, [int(n) for n in (tokens != 0).sum(dim=-1)]  # non-padding tokens, for `usage`


@dataclass
class LoadedIndex:
    version: str
    index: Any
    ids: Any
    manifest: dict
    rows: dict  # item_id -> row
    item_ids: list
    titles: list
    encoder_dim: int | None


@serve.deployment(max_ongoing_requests=64, ray_actor_options={"num_cpus": 0.5},
                  health_check_period_s=10, health_check_timeout_s=30)
class ImageIndex:
    """A FAISS index with its id map, loaded from the index root; also serves catalog thumbnails."""

    def __init__(self, index_dir: str, thumbnail_cache: int = 512):
        self.index_dir = index_dir
        self.versions = VersionCache(self._load, validate_index)
        version = idx.current_version(index_dir)
        self.versions.put(version, self._load(version))  # validated by the first check_health
        self._thumbs: "OrderedDict[tuple, bytes]" = OrderedDict()
        self._thumb_cache = thumbnail_cache

    def _load(self, version: str) -> LoadedIndex:
        from distill.student import read_manifest

        index, ids, manifest = idx.load_index(self.index_dir, version)
        try:
            encoder_dim = read_manifest(manifest["model"]["dir"]).get("embed_dim")
        except Exception as err:  # noqa: BLE001 - reported by check_health, with the path
            log.error("index %s: cannot read its model manifest: %s", version, err)
            encoder_dim = None
        return LoadedIndex(version, index, ids, manifest, idx.row_lookup(ids), ids["item_id"].to_pylist(),
                           ids["title"].to_pylist(), encoder_dim)

    def check_health(self) -> None:
        for loaded in self.versions.loaded():
            validate_index(loaded)

    async def prepare(self, version: str) -> dict:
        loaded = await self.versions.get(version)
        return {"version": version, "ntotal": int(loaded.index.ntotal), "dim": int(loaded.index.d)}

    async def info(self, version: str) -> dict:
        loaded = await self.versions.get(version)
        m = loaded.manifest
        return {"version": version, "ntotal": int(loaded.index.ntotal), "dim": int(loaded.index.d),
                "factory": m["factory"], "model": m["model"]["dir"], "created_at": m["created_at"]}

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)
    async def search(self, vectors: list[np.ndarray], ks: list[int], versions: list[str]) -> list[list[dict]]:
        out: list = [None] * len(vectors)
        for version in dict.fromkeys(versions):
            rows = [i for i, v in enumerate(versions) if v == version]
            loaded = await self.versions.get(version)
            scores, hits = idx.search(loaded.index, np.stack([vectors[i] for i in rows]), max(ks[i] for i in rows))
            for j, i in enumerate(rows):
                out[i] = [{"item_id": loaded.item_ids[r], "score": float(s), "title": loaded.titles[r]}
                          for s, r in zip(scores[j][: ks[i]].tolist(), hits[j][: ks[i]].tolist()) if r >= 0]
        return out

    async def image(self, item_id: str, size: int, version: str) -> dict:
        """{"png": bytes} for an indexed item, else {"error": reason, "status": 404}."""
        loaded = await self.versions.get(version)
        row = loaded.rows.get(item_id)
        if row is None:
            return {"error": f"unknown item id {item_id!r} (not in index {version})", "status": 404}
        key = (version, item_id, size)
        if key not in self._thumbs:
            result = await asyncio.to_thread(_thumbnail_png, loaded, row, item_id, size)
            if "png" not in result:
                return result
            self._thumbs[key] = result["png"]
            while len(self._thumbs) > self._thumb_cache:
                self._thumbs.popitem(last=False)
        self._thumbs.move_to_end(key)
        return {"png": self._thumbs[key]}


def validate_index(loaded: LoadedIndex) -> None:
    """Raise unless the index holds vectors of the query encoder's dimension (Serve's health check)."""
    where = f"index version {loaded.version} under {loaded.manifest.get('catalog', '?')}"
    if loaded.index.ntotal == 0:
        raise RuntimeError(f"{where} is empty (0 vectors)")
    if loaded.encoder_dim is None:
        raise RuntimeError(f"{where}: the model {loaded.manifest['model']['dir']} it was built with cannot be read")
    if int(loaded.index.d) != int(loaded.encoder_dim):
        raise RuntimeError(f"{where}: index dimension {loaded.index.d} does not match the query encoder's "
                           f"{loaded.encoder_dim} (model {loaded.manifest['model']['dir']})")


def _thumbnail_png(loaded: LoadedIndex, row: int, item_id: str, size: int) -> dict:
    from distill.images import ImageError, decode_image, encode_png, white_pad_thumbnail

    data, path = idx.read_catalog_image(loaded.manifest["catalog"], loaded.ids, row)
    if data is None and path is None:
        return {"error": f"item {item_id!r} has no image in the catalog", "status": 404}
    try:
        img = decode_image(item_id, data, path)
    except ImageError as err:
        return {"error": str(err), "status": 404}
    return {"png": encode_png(white_pad_thumbnail(img, size))}


# ---------------------------------------------------------------------------------------- ASGI bits


class BodySizeLimit:
    """Reject request bodies above `max_bytes` with 413, by Content-Length or while streaming."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            return await _send_json(send, 413, f"request body larger than {self.max_bytes} bytes")
        if length is not None:
            return await self.app(scope, receive, send)
        # No Content-Length (chunked): buffer up to the limit, then replay to the app.
        messages, total = [], 0
        while True:
            message = await receive()
            messages.append(message)
            total += len(message.get("body", b""))
            if total > self.max_bytes:
                return await _send_json(send, 413, f"request body larger than {self.max_bytes} bytes")
            if message["type"] != "http.request" or not message.get("more_body"):
                break

        async def replay():
            return messages.pop(0) if messages else await receive()

        return await self.app(scope, replay, send)


class ApiKeyAuth:
    """Require `X-API-Key` on every route but the open ones (health, the static page, CORS preflight)."""

    def __init__(self, app, key: str):
        self.app, self.key = app, key.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope.get("method") != "OPTIONS":
            path = scope["path"]
            root = scope.get("root_path", "")
            if root and path.startswith(root):
                path = path[len(root):] or "/"
            if path not in OPEN_PATHS:
                given = dict(scope.get("headers") or []).get(b"x-api-key", b"")
                if not hmac.compare_digest(given, self.key):
                    return await _send_json(send, 401, "missing or wrong X-API-Key header")
        return await self.app(scope, receive, send)


async def _send_json(send, status: int, message: str) -> None:
    resp = JSONResponse({"detail": message}, status_code=status)
    await resp({"type": "http"}, None, send)


# ------------------------------------------------------------------------------------------ schemas


class SearchHit(BaseModel):
    item_id: str
    score: float
    title: Optional[str]
    image_url: str


class SearchResponse(BaseModel):
    query: str
    k: int
    version: str
    results: list[SearchHit]
    took_ms: float


class EmbeddingItem(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: Union[list[float], str]


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingItem]
    model: str
    usage: Usage


class ApiSettings(BaseModel):
    """What the ingress needs from ServeConfig plus the index root."""

    model_config = ConfigDict(extra="forbid")
    index_dir: str
    api_key_env: Optional[str] = None
    cors_origins: list[str] = []
    max_k: int = 100
    max_query_chars: int = 2000
    max_body_bytes: int = 64 * 1024
    max_embedding_inputs: int = 256
    version_poll_s: float = 2.0
    thumbnail_size: int = 256


def _non_blank(text: str, what: str) -> str:
    if not text.strip():
        raise ValueError(f"{what} must not be empty or only whitespace")
    return text


def _validation_message(err: RequestValidationError) -> str:
    parts = []
    for e in err.errors():
        if e.get("type") == "json_invalid":  # loc holds a character offset, not a field
            parts.append(f"malformed JSON body at character {e['loc'][-1]}: {e.get('ctx', {}).get('error', '')}")
            continue
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {e.get('msg')}")
    return "; ".join(parts)


# -------------------------------------------------------------------------------------------- ingress


@serve.deployment(max_ongoing_requests=128, ray_actor_options={"num_cpus": 0.25},
                  health_check_period_s=10, health_check_timeout_s=30)
@serve.ingress()
class Api:
    """HTTP ingress. The FastAPI app is built per replica (`__serve_build_asgi_app__`) from its settings."""

    def __init__(self, encoder: DeploymentHandle, index: DeploymentHandle, settings: dict):
        self.encoder, self.index = encoder, index
        self.settings = ApiSettings.model_validate(settings)
        self.api_key = self._read_api_key()
        self.pinned: Optional[str] = None
        self.active = idx.current_version(self.settings.index_dir)
        self.swap_error: Optional[str] = None
        self._failed: Optional[str] = None
        self._next_check = time.monotonic() + self.settings.version_poll_s
        self._switching: Optional[asyncio.Task] = None

    def _read_api_key(self) -> Optional[str]:
        name = self.settings.api_key_env
        if not name:
            return None
        key = os.environ.get(name)
        if not key:
            raise RuntimeError(f"serve.api_key_env is {name!r} but that environment variable is empty or missing "
                               "in the Api replica (set it on the nodes or in runtime_env.env_vars)")
        return key

    def reconfigure(self, user_config: dict) -> None:
        """`user_config: {index_version: vX}` pins a version; null follows CURRENT again."""
        self.pinned = (user_config or {}).get("index_version")
        self._next_check = 0.0

    def __serve_build_asgi_app__(self):
        return create_api(self)

    # -- versions ------------------------------------------------------------------------------------
    async def version(self) -> str:
        now = time.monotonic()
        if now >= self._next_check and self._switching is None:
            self._next_check = now + self.settings.version_poll_s
            try:
                wanted = self.pinned or await asyncio.to_thread(idx.current_version, self.settings.index_dir)
            except idx.IndexDirError as err:
                self.swap_error = str(err)
                wanted = self.active
            if wanted not in (self.active, self._failed):
                self._switching = asyncio.create_task(self._switch(wanted))
        return self.active

    async def _switch(self, version: str) -> None:
        try:
            await asyncio.gather(self.encoder.prepare.remote(version), self.index.prepare.remote(version))
            log.info("index version %s -> %s", self.active, version)
            self.active, self.swap_error, self._failed = version, None, None
        except Exception as err:  # noqa: BLE001 - a bad version must never take serving down
            self.swap_error, self._failed = f"version {version} was not taken up: {err}", version
            log.error(self.swap_error)
        finally:
            self._switching = None

    # -- backend calls --------------------------------------------------------------------------------
    async def embed(self, texts: list[str], version: str) -> list[tuple[np.ndarray, int]]:
        try:
            return list(await asyncio.gather(*(self.encoder.embed.remote(t, version) for t in texts)))
        except Exception as err:  # noqa: BLE001
            raise HTTPException(503, f"query encoder unavailable: {err}") from None

    async def search(self, query: str, k: int) -> tuple[str, list[dict]]:
        version = await self.version()
        [(vec, _)] = await self.embed([query], version)
        try:
            return version, await self.index.search.remote(vec, k, version)
        except Exception as err:  # noqa: BLE001
            raise HTTPException(503, f"index unavailable: {err}") from None


def create_api(api: Api) -> FastAPI:
    s = api.settings
    app = FastAPI(title="distill retriever", version="1", docs_url="/docs", openapi_url="/openapi.json",
                  description="Text-to-product-image search with a distilled CLIP-style student.")
    page = (STATIC / "index.html").read_text()

    class SearchRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        query: StrictStr = Field(..., min_length=1, max_length=s.max_query_chars, description="free text")
        k: StrictInt = Field(10, ge=1, le=s.max_k, description="number of results")

        @field_validator("query")
        @classmethod
        def _query(cls, v: str) -> str:
            return _non_blank(v, "query")

    class EmbeddingsRequest(BaseModel):
        model_config = ConfigDict(extra="ignore")  # OpenAI clients send optional fields (user, ...)
        input: Union[StrictStr, list[StrictStr]]
        model: Optional[StrictStr] = None
        encoding_format: Literal["float", "base64"] = "float"
        dimensions: Optional[StrictInt] = None

        @field_validator("input")
        @classmethod
        def _input(cls, v):
            texts = [v] if isinstance(v, str) else v
            if not texts:
                raise ValueError("input must hold at least one string")
            if len(texts) > s.max_embedding_inputs:
                raise ValueError(f"at most {s.max_embedding_inputs} strings per request, got {len(texts)}")
            for i, t in enumerate(texts):
                _non_blank(t, f"input[{i}]")
                if len(t) > s.max_query_chars:
                    raise ValueError(f"input[{i}] has {len(t)} characters, more than {s.max_query_chars}")
            return v

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, err: RequestValidationError):
        return JSONResponse({"detail": _validation_message(err), "errors": _jsonable_errors(err)}, status_code=422)

    def image_url(request: Request, item_id: str) -> str:
        return f"{request.scope.get('root_path', '')}/items/{quote(item_id, safe='')}/image"

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def home() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        version = await api.version()
        try:
            info = await asyncio.wait_for(api.index.info.remote(version), timeout=10)
        except Exception as err:  # noqa: BLE001
            return JSONResponse({"status": "unavailable", "version": version, "detail": str(err)}, status_code=503)
        return JSONResponse({"status": "ok", **info, "pinned": api.pinned, "swap_error": api.swap_error})

    @app.post("/search", response_model=SearchResponse)
    async def search(body: SearchRequest, request: Request) -> SearchResponse:
        t0 = time.perf_counter()
        version, hits = await api.search(body.query, body.k)
        results = [SearchHit(**h, image_url=image_url(request, h["item_id"])) for h in hits]
        return SearchResponse(query=body.query, k=body.k, version=version, results=results,
                              took_ms=round((time.perf_counter() - t0) * 1000, 2))

    @app.post("/v1/embeddings", response_model=EmbeddingsResponse)
    async def embeddings(body: EmbeddingsRequest) -> EmbeddingsResponse:
        texts = [body.input] if isinstance(body.input, str) else list(body.input)
        version = await api.version()
        out = await api.embed(texts, version)
        dim = len(out[0][0])
        if body.dimensions is not None and body.dimensions != dim:
            raise HTTPException(422, f"dimensions: this model returns {dim}-d embeddings, not {body.dimensions}")
        data = [EmbeddingItem(index=i, embedding=_encode_vector(vec, body.encoding_format))
                for i, (vec, _) in enumerate(out)]
        tokens = sum(n for _, n in out)
        return EmbeddingsResponse(data=data, model=f"distill-{version}",
                                  usage=Usage(prompt_tokens=tokens, total_tokens=tokens))

    @app.get("/v1/models")
    async def models() -> dict:
        version = await api.version()
        return {"object": "list", "data": [{"id": f"distill-{version}", "object": "model", "owned_by": "distill"}]}

    @app.get("/items/{item_id:path}/image", responses={200: {"content": {"image/png": {}}}})
    async def item_image(item_id: str = PathParam(..., min_length=1, max_length=MAX_ITEM_ID_CHARS),
                         size: int = Query(s.thumbnail_size, ge=32, le=1024)) -> Response:
        version = await api.version()
        try:
            result = await api.index.image.remote(item_id, size, version)
        except Exception as err:  # noqa: BLE001
            raise HTTPException(503, f"index unavailable: {err}") from None
        if "png" not in result:
            raise HTTPException(result["status"], result["error"])
        return Response(result["png"], media_type="image/png", headers={"Cache-Control": "public, max-age=3600"})

    # Middleware: the last added runs first. CORS outermost, so 401/413 answers carry CORS headers.
    app.add_middleware(BodySizeLimit, max_bytes=s.max_body_bytes)
    if api.api_key:
        app.add_middleware(ApiKeyAuth, key=api.api_key)
    if s.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=s.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Content-Type", "X-API-Key", "Authorization"])
    return app


def _jsonable_errors(err: RequestValidationError) -> list[dict]:
    return [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg")), "type": str(e.get("type"))}
            for e in err.errors()]


def _encode_vector(vec: np.ndarray, fmt: str):
    if fmt == "base64":  # what the openai client asks for by default: little-endian float32 bytes
        return base64.b64encode(np.asarray(vec, dtype="<f4").tobytes()).decode()
    return [float(x) for x in vec]


# ---------------------------------------------------------------------------------------- app builder


class AppArgs(BaseModel):
    """Arguments of `build_app` (from `serve run ... key=value` or the YAML `args:`)."""

    model_config = ConfigDict(extra="forbid")
    index_dir: Optional[str] = None
    config: Optional[str] = None  # a pipeline YAML: its serve: section and paths.index are the defaults
    overrides: list[str] = []  # --set style overrides for that config ("serve.max_k=50")
    serve: dict = {}  # ServeConfig fields


def compose(index_dir: str, cfg: ServeConfig, actor_options: dict | None = None, api_actor_options: dict | None = None):
    """The application graph. `actor_options` are merged into every deployment's ray_actor_options."""
    if not (Path(index_dir) / idx.CURRENT).exists():
        raise FileNotFoundError(f"{index_dir} has no {idx.CURRENT} pointer: build the index first "
                                "(python ray_jobs/index.py --config ...)")
    opts = dict(actor_options or {})

    def with_opts(dep, extra=None):
        merged = {**(dep.ray_actor_options or {}), **opts, **(extra or {})}
        return dep.options(ray_actor_options=merged)

    settings = ApiSettings(index_dir=str(index_dir), **{k: getattr(cfg, k) for k in ApiSettings.model_fields
                                                        if k != "index_dir"})
    encoder = with_opts(QueryEncoder).bind(str(index_dir), cfg.encoder_max_batch_size, cfg.encoder_batch_wait_s)
    image_index = with_opts(ImageIndex).bind(str(index_dir))
    return with_opts(Api, api_actor_options).bind(encoder, image_index, settings.model_dump())


def build_app(args: dict):
    """`serve run serve.app:build_app index_dir=DIR [config=YAML] [max_k=50 ...]` and the YAML import_path.

    Plain `key=value` pairs that name ServeConfig fields are accepted too (values parsed as YAML).
    """
    args = dict(args or {})
    serve_fields = {k: args.pop(k) for k in list(args) if k in ServeConfig.model_fields}
    parsed = AppArgs.model_validate(args)
    overrides = list(parsed.overrides)
    for k, v in {**parsed.serve, **serve_fields}.items():
        overrides.append(f"serve.{k}={v if isinstance(v, str) else yaml.safe_dump(v, default_flow_style=True).strip()}")
    cfg = load_pipeline_config(parsed.config, overrides)
    index_dir = parsed.index_dir or str(cfg.path("index"))
    return compose(index_dir, cfg.serve)
