"""The HTTP API: the `Api` ingress deployment, its FastAPI routes and their request/response models.

The OpenAPI document is the contract (tests/serve/test_serve_contract.py runs schemathesis against it): every
constraint validation enforces is declared in the schema (lengths, non-blank patterns, ranges), every
error status a route can answer is documented with the body it really has, and 422 bodies are
`ValidationProblem` (`detail`: one message naming each bad field, `errors`: the structured list).

Deliberately no `from __future__ import annotations`: FastAPI resolves the request models defined
inside `*_request_model` from the route signatures, which needs real annotation objects.
"""

import asyncio
import base64
import logging
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from fastapi import FastAPI, HTTPException, Query, Request, Security
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, ConfigDict, Field, StrictStr, WithJsonSchema, field_validator
from ray import serve
from ray.serve.handle import DeploymentHandle

from distill import index as idx
from distill.config.pipeline import RerankConfig, ServeConfig
from distill.querylog import QueryLogWriter
from serve.auth import API_KEY_HEADER, install_guards, read_api_key
from serve.backends import LocalBackend, RemoteBackend
from serve.search import NON_BLANK, SearchResponse, WholeNumber, clean_errors, search_request_model
from serve.search import non_blank as _non_blank
from serve.search_run import run_search
from serve.versions import VersionTracker

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
MAX_ITEM_ID_CHARS = 512


# ------------------------------------------------------------------------------------ response models


class EmbeddingItem(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingItem]
    model: str
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    owned_by: str = "distill"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Health(BaseModel):
    """What anyone may see: whether the retriever answers, and with which index version."""

    status: Literal["ok", "unavailable"]
    version: str


class QueryLogCounters(BaseModel):
    """This replica's query log (serve.query_log, docs/flywheel.md): rows written, and rows dropped by reason."""

    logged: int = Field(description="rows in written parts")
    dropped_full: int = Field(description="rows dropped because the writer's queue was full")
    dropped_error: int = Field(description="rows dropped because they could not be built or their part written")
    dropped_closed: int = Field(description="rows of searches answered while the replica shut down")
    sampled_out: int = Field(description="searches left out by serve.query_log.sample_rate")
    parts: int = Field(description="Parquet parts written")
    expired_parts: int = Field(description="parts deleted after serve.query_log.retention_days")
    queued: int = Field(description="rows waiting for the writer thread")


class ServiceStatus(BaseModel):
    """The served index and model in detail (behind the API key when one is configured)."""

    status: Literal["ok"] = "ok"
    version: str
    ntotal: int
    dim: int
    factory: str
    model: str = Field(description="directory of the student that built this index version")
    model_created_at: str | None
    created_at: str
    pinned: str | None
    swap_error: str | None
    query_log: QueryLogCounters | None = Field(None, description="null while serve.query_log.enabled is false")


class Problem(BaseModel):
    detail: str


class FieldError(BaseModel):
    loc: list[str]
    msg: str
    type: str


class ValidationProblem(BaseModel):
    detail: str = Field(description="every problem in one message, each naming its field")
    errors: list[FieldError]


ERRORS = {
    400: (Problem, "the body cannot be read as JSON text (e.g. not UTF-8)"),
    401: (Problem, f"missing or wrong {API_KEY_HEADER} header"),
    404: (Problem, "no such item in the served index version (also a composed query's query.reference_item)"),
    413: (Problem, "request body larger than serve.max_body_bytes (/search: plus an image upload), or an uploaded "
                   "query.reference_image larger than serve.max_image_bytes"),
    415: (Problem, "query.reference_image is not one of serve.image_types (PNG, JPEG, WebP)"),
    422: (ValidationProblem, "invalid request"),
    503: (Problem, "a backend deployment does not answer"),
}


def documented(*statuses: int) -> dict:
    return {s: {"model": ERRORS[s][0], "description": ERRORS[s][1]} for s in statuses}


# ------------------------------------------------------------------------------------------- ingress


@serve.deployment(max_ongoing_requests=128, ray_actor_options={"num_cpus": 0.25},
                  health_check_period_s=10, health_check_timeout_s=30)
@serve.ingress()
class Api:
    """HTTP ingress. The FastAPI app is built per replica (`__serve_build_asgi_app__`) from its settings.

    With `encoder` and `index` handles it calls those deployments (topology "split"); without them it holds
    the encoder and the index itself (topology "single", serve.backends.LocalBackend). `rerank_settings`
    ({"teacher": TeacherConfig, "rerank": RerankConfig} dumps, only when rerank.enabled) turn re-ranking and
    teacher descriptions on: through the `reranker` handle (split) or a Reranker object of its own (single).
    """

    def __init__(self, index_dir: str, settings: dict, encoder: DeploymentHandle | None = None,
                 index: DeploymentHandle | None = None, reranker: DeploymentHandle | None = None,
                 rerank_settings: dict | None = None):
        from distill.config.teacher import TeacherConfig
        from distill.retrieval.rerank import effective_teacher_config
        from distill.teacher import teacher_id_for

        self.settings = ServeConfig.model_validate(settings)
        self.rerank_cfg = RerankConfig.model_validate(rerank_settings["rerank"]) if rerank_settings else None
        self.teacher_id = (teacher_id_for(effective_teacher_config(
            TeacherConfig.model_validate(rerank_settings["teacher"]), self.rerank_cfg)) if rerank_settings else None)
        self.backend = (RemoteBackend(encoder, index, reranker) if encoder is not None
                        else LocalBackend(index_dir, self.settings, rerank_settings))
        self.api_key = read_api_key(self.settings.api_key_env)
        self.query_log = QueryLogWriter.from_config(self.settings.query_log, _replica_id())
        self.versions = VersionTracker(index_dir, self.settings.version_poll_s, self._prepare)
        # The schema declares `dimensions` as this; a later version of another dimension is still checked.
        self.embed_dim = int(idx.read_index_manifest(index_dir, self.versions.active)["embed_dim"])

    def reconfigure(self, user_config: dict) -> None:
        """`user_config: {index_version: vX}` pins a version; null follows CURRENT again."""
        self.versions.pin((user_config or {}).get("index_version"))

    def __serve_build_asgi_app__(self):
        return create_api(self)

    def __del__(self):
        """Serve's graceful shutdown: the query log writes the rows it holds before the replica goes."""
        writer = getattr(self, "query_log", None)
        if writer is not None:
            writer.close(timeout=10)

    def check_health(self) -> None:
        self.backend.check_health()

    async def _prepare(self, version: str) -> None:
        await self.backend.prepare(version)

    async def embed(self, texts: list[str], version: str) -> list[tuple[np.ndarray, int]]:
        try:
            return list(await asyncio.gather(*(self.backend.embed(t, version) for t in texts)))
        except Exception as err:  # noqa: BLE001
            raise HTTPException(503, f"query encoder unavailable: {err}") from None

    async def info(self, version: str) -> dict:
        return await asyncio.wait_for(self.backend.info(version), timeout=10)

    async def image(self, item_id: str, size: int, version: str) -> dict:
        try:
            return await self.backend.image(item_id, size, version)
        except Exception as err:  # noqa: BLE001
            raise HTTPException(503, f"index unavailable: {err}") from None


# ------------------------------------------------------------------------------------ request models


def embeddings_request_model(cfg: ServeConfig, embed_dim: int) -> type[BaseModel]:
    """The /v1/embeddings body with this deployment's limits, declared in its schema."""
    text_schema = {"type": "string", "minLength": 1, "maxLength": cfg.max_query_chars, "pattern": NON_BLANK}
    input_schema = {"anyOf": [text_schema, {"type": "array", "items": text_schema, "minItems": 1,
                                            "maxItems": cfg.max_embedding_inputs}],
                    "description": "a string or a list of strings (not token arrays)"}

    class EmbeddingsRequest(BaseModel):
        model_config = ConfigDict(extra="ignore")  # OpenAI clients send optional fields (user, ...)
        input: Annotated[StrictStr | list[StrictStr], WithJsonSchema(input_schema)]
        model: StrictStr | None = None
        encoding_format: Literal["float", "base64"] = "float"
        dimensions: Annotated[WholeNumber | None, WithJsonSchema(
            {"anyOf": [{"type": "integer", "const": embed_dim}, {"type": "null"}],
             "description": "must equal the model's embedding size"})] = None

        @field_validator("input")
        @classmethod
        def _input(cls, v):
            texts = [v] if isinstance(v, str) else v
            if not texts:
                raise ValueError("input must hold at least one string")
            if len(texts) > cfg.max_embedding_inputs:
                raise ValueError(f"at most {cfg.max_embedding_inputs} strings per request, got {len(texts)}")
            for i, t in enumerate(texts):
                _non_blank(t, f"input[{i}]")
                if len(t) > cfg.max_query_chars:
                    raise ValueError(f"input[{i}] has {len(t)} characters, more than {cfg.max_query_chars}")
            return v

    return EmbeddingsRequest


# ------------------------------------------------------------------------------------------- the app


def create_api(api: Api) -> FastAPI:
    app = FastAPI(title="distill retriever", version="1", docs_url="/docs", openapi_url="/openapi.json",
                  description="Text-to-product-image search with a distilled CLIP-style student.")
    app.add_exception_handler(RequestValidationError, _validation_problem)
    # With a key, protected routes declare it (and their 401) in the schema; the middleware enforces it.
    keyed = [Security(APIKeyHeader(name=API_KEY_HEADER, auto_error=False))] if api.api_key else []
    auth_errors = (401,) if api.api_key else ()
    _add_page_and_health(app, api, keyed, auth_errors)
    _add_search(app, api, keyed, auth_errors)
    _add_embeddings(app, api, keyed, auth_errors)
    _add_item_image(app, api, keyed, auth_errors)
    install_guards(app, api.settings, api.api_key)
    return app


def _add_page_and_health(app: FastAPI, api: Api, keyed: list, auth_errors: tuple) -> None:
    page = (STATIC / "index.html").read_text()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def home() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/healthz", response_model=Health, responses={503: {"model": Health, "description": "unavailable"}})
    async def healthz() -> JSONResponse:
        """Open to all: only the health and the version (paths and sizes are on /status)."""
        version = await api.versions.current()
        try:
            await api.info(version)
        except Exception as err:  # noqa: BLE001 - the reason may hold paths: log it, do not show it
            log.error("healthz: index version %s does not answer: %s", version, err)
            return JSONResponse({"status": "unavailable", "version": version}, status_code=503)
        return JSONResponse({"status": "ok", "version": version})

    @app.get("/status", response_model=ServiceStatus, dependencies=keyed, responses=documented(*auth_errors, 503))
    async def status() -> ServiceStatus:
        version = await api.versions.current()
        try:
            info = await api.info(version)
        except Exception as err:  # noqa: BLE001
            raise HTTPException(503, f"index unavailable: {err}") from None
        counters = QueryLogCounters(**api.query_log.stats()) if api.query_log is not None else None
        return ServiceStatus(**info, pinned=api.versions.pinned, swap_error=api.versions.swap_error,
                             query_log=counters)

    @app.get("/v1/models", response_model=ModelList, dependencies=keyed, responses=documented(*auth_errors))
    async def models() -> ModelList:
        version = await api.versions.current()
        return ModelList(data=[ModelCard(id=f"distill-{version}")])


def _add_search(app: FastAPI, api: Api, keyed: list, auth_errors: tuple) -> None:
    SearchRequest = search_request_model(api.settings)

    @app.post("/search", response_model=SearchResponse, dependencies=keyed,
              responses=documented(400, *auth_errors, 404, 413, 415, 422, 503))
    async def search(body: SearchRequest, request: Request) -> SearchResponse:
        """Text, conversation or composed queries (serve.search); `"rerank": true` asks the teacher to re-order
        the student's top rerank.k within rerank.budget_s (else the student's order, `reranked: false`)."""
        return await run_search(api, body, request.scope.get("root_path", ""))


def _add_embeddings(app: FastAPI, api: Api, keyed: list, auth_errors: tuple) -> None:
    EmbeddingsRequest = embeddings_request_model(api.settings, api.embed_dim)

    @app.post("/v1/embeddings", response_model=EmbeddingsResponse, dependencies=keyed,
              responses=documented(400, *auth_errors, 413, 422, 503))
    async def embeddings(body: EmbeddingsRequest) -> EmbeddingsResponse:
        texts = [body.input] if isinstance(body.input, str) else list(body.input)
        version = await api.versions.current()
        out = await api.embed(texts, version)
        dim = len(out[0][0])
        if body.dimensions is not None and body.dimensions != dim:
            raise RequestValidationError([{"loc": ("body", "dimensions"), "type": "value_error",
                                           "msg": f"this model returns {dim}-d embeddings, not {body.dimensions}"}])
        data = [EmbeddingItem(index=i, embedding=_encode_vector(vec, body.encoding_format))
                for i, (vec, _) in enumerate(out)]
        tokens = sum(n for _, n in out)
        return EmbeddingsResponse(data=data, model=f"distill-{version}",
                                  usage=Usage(prompt_tokens=tokens, total_tokens=tokens))


def _add_item_image(app: FastAPI, api: Api, keyed: list, auth_errors: tuple) -> None:
    png = {200: {"content": {"image/png": {}}, "description": "a white-padded square PNG thumbnail"}}

    @app.get("/items/{item_id:path}/image", response_class=Response, dependencies=keyed,
             responses={**png, **documented(*auth_errors, 404, 422, 503)})
    async def item_image(item_id: str = PathParam(..., min_length=1, max_length=MAX_ITEM_ID_CHARS),
                         size: int = Query(api.settings.thumbnail_size, ge=32, le=1024)) -> Response:
        version = await api.versions.current()
        result = await api.image(item_id, size, version)
        if "png" not in result:
            raise HTTPException(result["status"], result["error"])
        return Response(result["png"], media_type="image/png", headers={"Cache-Control": "public, max-age=3600"})


# ------------------------------------------------------------------------------------------- helpers


async def _validation_problem(request: Request, err: RequestValidationError) -> JSONResponse:
    errors = clean_errors(list(err.errors()), getattr(err, "body", None))
    body = ValidationProblem(detail=_validation_message(errors), errors=_field_errors(errors))
    return JSONResponse(body.model_dump(), status_code=422)


def _validation_message(errors: list[dict]) -> str:
    parts = []
    for e in errors:
        if e.get("type") == "json_invalid":  # loc holds a character offset, not a field
            parts.append(f"malformed JSON body at character {e['loc'][-1]}: {e.get('ctx', {}).get('error', '')}")
            continue
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {e.get('msg')}")
    return "; ".join(parts)


def _field_errors(errors: list[dict]) -> list[FieldError]:
    return [FieldError(loc=[str(p) for p in e.get("loc", ())], msg=str(e.get("msg")), type=str(e.get("type")))
            for e in errors]


def _replica_id() -> str | None:
    """Serve's id of this replica (the query log's part names); None outside a replica."""
    try:
        return serve.get_replica_context().replica_id.unique_id
    except Exception:  # noqa: BLE001 - the writer falls back to host and process id
        return None


def _encode_vector(vec: np.ndarray, fmt: str):
    if fmt == "base64":  # what the openai client asks for by default: little-endian float32 bytes
        return base64.b64encode(np.asarray(vec, dtype="<f4").tobytes()).decode()
    return [float(x) for x in vec]
