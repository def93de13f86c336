"""The retriever as a Ray Serve application, in one of two topologies (ServeConfig `topology`).

split (three separately scalable deployments, four with re-ranking):
    Api (FastAPI ingress, serve.api) --> QueryEncoder (frozen text tower, serve.deployments)
                                     --> ImageIndex  (FAISS index + ids, catalog thumbnails)
                                     --> Reranker    (the teacher at query time, serve.reranker; rerank.enabled)
single (one deployment; scale it by Api replicas):
    Api, holding the QueryEncoder, ImageIndex (and Reranker) objects itself (serve.backends.LocalBackend)

Development:  serve run serve.app:build_app config=configs/embedded.yaml   (or index_dir=DIR)
Cluster:      serve deploy serve/serve_config.yaml   (replicas, autoscaling, health checks, http_options)

Versions and hot swap are in serve.versions; auth, CORS and body limits in serve.auth (docs/serving.md).
The HTTP host and port are Serve's `http_options`, never an argument here: an application builder runs
after Serve's proxies have started.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict

from distill import index as idx
from distill.config.pipeline import RerankConfig, ServeConfig, load_pipeline_config
from distill.config.teacher import TeacherConfig
from distill.querylog.writer import expanded_directory
from serve.api import Api
from serve.deployments import ImageIndex, QueryEncoder
from serve.reranker import Reranker


class AppArgs(BaseModel):
    """Arguments of `build_app` (from `serve run ... key=value` or the YAML `args:`) besides ServeConfig fields."""

    model_config = ConfigDict(extra="forbid")
    index_dir: str | None = None
    config: str | None = None  # a pipeline YAML: its serve: section and paths.index are the defaults
    overrides: list[str] = []  # --set style overrides for that config ("serve.max_k=50")
    serve: dict = {}  # ServeConfig fields
    rerank: dict = {}  # RerankConfig fields (rerank.enabled: the teacher at query time)
    teacher: dict = {}  # TeacherConfig fields: the pipeline's teacher, which re-ranks unless rerank.teacher is set


def compose(index_dir: str, cfg: ServeConfig, actor_options: dict | None = None, api_actor_options: dict | None = None,
            rerank: RerankConfig | None = None, teacher: TeacherConfig | None = None):
    """The application graph. `actor_options` are merged into every deployment's ray_actor_options.

    With `rerank.enabled` the teacher (`rerank.teacher` or `teacher`) joins: a Reranker deployment (split) or
    an object in each Api replica (single), which then also asks for rerank.num_cpus / num_gpus."""
    if not (Path(index_dir) / idx.CURRENT).exists():
        raise FileNotFoundError(f"{index_dir} has no {idx.CURRENT} pointer: build the index first "
                                "(python ray_jobs/index.py --config ...)")
    if cfg.query_log.enabled:
        expanded_directory(cfg.query_log)  # an unexpanded {workdir} fails here, not in every replica
    opts = dict(actor_options or {})

    def with_opts(dep, extra=None):
        merged = {**(dep.ray_actor_options or {}), **opts, **(extra or {})}
        return dep.options(ray_actor_options=merged)

    settings = cfg.model_dump()
    rerank_settings = None
    if rerank is not None and rerank.enabled:
        rerank_settings = {"teacher": (teacher or TeacherConfig()).model_dump(), "rerank": rerank.model_dump()}
    if cfg.topology == "single":
        # The Api replica does the encoder's work, so it asks for the encoder's CPUs (its torch threads follow).
        extra = {"num_gpus": rerank.num_gpus} if rerank_settings and rerank.num_gpus else {}
        api = Api.options(ray_actor_options={**(Api.ray_actor_options or {}), **(QueryEncoder.ray_actor_options or {}),
                                             **extra})
        return with_opts(api, api_actor_options).bind(str(index_dir), settings, rerank_settings=rerank_settings)
    encoder = with_opts(QueryEncoder).bind(str(index_dir), cfg.encoder_max_batch_size, cfg.encoder_batch_wait_s)
    image_index = with_opts(ImageIndex).bind(str(index_dir))
    reranker = None
    if rerank_settings:
        gpus = {"num_gpus": rerank.num_gpus} if rerank.num_gpus else {}
        reranker = with_opts(Reranker.options(ray_actor_options={"num_cpus": rerank.num_cpus, **gpus}))
        reranker = reranker.bind(**rerank_settings)
    return with_opts(Api, api_actor_options).bind(str(index_dir), settings, encoder=encoder, index=image_index,
                                                  reranker=reranker, rerank_settings=rerank_settings)


def build_app(args: dict):
    """`serve run serve.app:build_app index_dir=DIR [config=YAML] [max_k=50 ...]` and the YAML import_path.

    Every `key=value` that is not an AppArgs field is a ServeConfig field (values parsed as YAML), so a
    misspelt or removed key (`host=`, `port=`) fails with the config's own message naming it.
    """
    args = dict(args or {})
    serve_fields = {k: args.pop(k) for k in list(args) if k not in AppArgs.model_fields}
    parsed = AppArgs.model_validate(args)
    overrides = list(parsed.overrides)
    def override(section: str, values: dict) -> None:
        for k, v in values.items():
            text = v if isinstance(v, str) else yaml.safe_dump(v, default_flow_style=True).strip()
            overrides.append(f"{section}.{k}={text}")

    override("serve", {**parsed.serve, **serve_fields})
    override("rerank", parsed.rerank)
    override("teacher", parsed.teacher)
    cfg = load_pipeline_config(parsed.config, overrides)
    index_dir = parsed.index_dir or str(cfg.path("index"))
    return compose(index_dir, cfg.serve_config(), rerank=cfg.rerank, teacher=cfg.teacher)
