"""Shared by the Serve tests: a tiny indexed world and the retriever running under a real `serve.run`."""

from __future__ import annotations

import socket
from contextlib import contextmanager
from pathlib import Path

import httpx

from distill.config.pipeline import ServeConfig
from distill.student import save_student
from helpers.data import make_catalog, make_index

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
def running_retriever(index_dir: Path, cfg: ServeConfig, api_actor_options: dict | None = None, rerank=None,
                      teacher=None):
    """Serve the retriever on a free loopback port at route "/"; yields {"port", "client", "url", "topology"}."""
    from ray import serve

    from serve import app

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(app.compose(str(index_dir), cfg, actor_options=SMALL, api_actor_options=api_actor_options,
                          rerank=rerank, teacher=teacher),
              name="retriever", route_prefix="/", logging_config={"enable_access_log": False})
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    try:
        yield {"port": port, "client": client, "url": f"http://127.0.0.1:{port}", "topology": cfg.topology}
    finally:
        client.close()
        serve.shutdown()


class FakeVLM:
    """An OpenAI-compatible VLM on loopback for the re-ranking teacher (tests/teacher/test_teacher_openai.py's
    FakeChatServer, answering by request): a rank request (it carries a JSON schema) gets the reversed
    presentation order, a describe request `description`. `mode`: "ok", "garbage" (prose) or "slow"
    (answers after `delay_s`). Every request body is in `.requests`."""

    def __init__(self, description: str = "A blue ball.", delay_s: float = 5.0):
        from helpers.openai_server import FakeChatServer

        self.server = FakeChatServer([])
        self.server.script = self  # FakeChatServer pops its next answer from here, after recording the body
        self.mode, self.description, self.delay_s = "ok", description, delay_s

    @property
    def requests(self) -> list[dict]:
        return self.server.requests

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def __bool__(self) -> bool:
        return True

    def pop(self, _index: int = 0) -> tuple[int, str]:
        import json
        import time

        body = self.server.requests[-1]
        if self.mode == "slow":
            time.sleep(self.delay_s)
        if self.mode == "garbage":
            return 200, "They are all lovely, honestly."
        schema = body.get("response_format", {}).get("json_schema", {}).get("schema")
        if schema is None:
            return 200, self.description
        n = schema["properties"]["ranking"]["maxItems"]
        return 200, json.dumps({"ranking": list(range(n, 0, -1))})

    def __enter__(self):
        self.server.__enter__()
        return self

    def __exit__(self, *exc):
        self.server.__exit__(*exc)


def rerank_settings(base_url: str, k: int = 8, budget_s: float = 3.0):
    """(RerankConfig, TeacherConfig) of a re-ranking openai teacher at `base_url`."""
    from distill.config.pipeline import RerankConfig
    from distill.config.teacher import TeacherConfig

    teacher = TeacherConfig(backend="openai", openai={"base_url": base_url, "model": "fake-vlm", "max_retries": 0,
                                                      "api_key_env": "DISTILL_TEST_NO_KEY"})
    return RerankConfig(enabled=True, k=k, budget_s=budget_s), teacher


def png_b64(colour=(220, 30, 30), size=(48, 48), fmt: str = "PNG") -> str:
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode()
