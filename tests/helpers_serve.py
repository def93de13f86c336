"""Shared by the Serve tests: a tiny indexed world and the retriever running under a real `serve.run`."""

from __future__ import annotations

import socket
from contextlib import contextmanager
from pathlib import Path

import httpx
from helpers_data import make_catalog, make_index

from distill.settings import ServeConfig
from distill.student import save_student

SMALL = {"num_cpus": 0.1}  # several deployments on a 2-CPU test cluster
TOPOLOGIES = ["split", "single"]  # ServeConfig.topology: every behaviour of the API must hold in both


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_serve_world(root: Path, student) -> dict:
    """12 catalog items, one with a corrupt image (so never indexed), indexed with `student` as version v1."""
    model_a = save_student(student, root / "model-a")
    catalog = make_catalog(root / "catalog", n=12, corrupt=("item-011",))
    v1 = make_index(model_a, catalog, root / "index")
    return {"root": root, "model": model_a, "catalog": catalog, "index": root / "index", "v1": v1}


@contextmanager
def running_retriever(index_dir: Path, cfg: ServeConfig, api_actor_options: dict | None = None):
    """Serve the retriever on a free loopback port at route "/"; yields {"port", "client", "url", "topology"}."""
    from ray import serve

    from serve import app

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(app.compose(str(index_dir), cfg, actor_options=SMALL, api_actor_options=api_actor_options),
              name="retriever", route_prefix="/", logging_config={"enable_access_log": False})
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    try:
        yield {"port": port, "client": client, "url": f"http://127.0.0.1:{port}", "topology": cfg.topology}
    finally:
        client.close()
        serve.shutdown()
