"""The HTTP API keeps its own OpenAPI contract, and Serve's HTTP address is configured where Serve reads it.

Regression tests: `serve.host`/`serve.port` must not be accepted and then silently ignored by
`serve run`/`serve deploy`, and the API must not answer outside its OpenAPI document (as it once did: 422 bodies
unlike the documented HTTPValidationError, an undocumented 404, `{"input": ""}` allowed by the schema but rejected,
the model's filesystem path on the open /healthz). Then a schemathesis run with every check.
"""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest
import yaml
from helpers.serve import TOPOLOGIES, make_serve_world, png_b64, running_retriever

from distill.config.loading import ConfigError
from distill.config.pipeline import ServeConfig, load_pipeline_config

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "contract-key"
KEY = {"X-API-Key": API_KEY}
EXAMPLES_PER_OPERATION = 40
pytestmark = pytest.mark.slow


# ------------------------------------------------------------------ B: the HTTP address is http_options


@pytest.mark.parametrize("override", ["serve.host=0.0.0.0", "serve.port=9000"])
def test_serve_host_and_port_are_config_errors_that_point_to_http_options(override):
    with pytest.raises(ConfigError, match=r"serve\.(host|port): removed.*http_options"):
        load_pipeline_config(None, [override])


def test_build_app_rejects_a_port_argument_instead_of_ignoring_it(world):
    from serve import app

    assert app.build_app({"index_dir": str(world["index"])}) is not None  # a real index: only `port` is wrong
    with pytest.raises(ConfigError, match=r"serve\.port: removed.*http_options"):
        app.build_app({"index_dir": str(world["index"]), "port": 9000})


def test_serve_config_file_sets_the_address_in_http_options():
    raw = yaml.safe_load((ROOT / "serve" / "serve_config.yaml").read_text())
    assert {"host", "port"} <= set(raw["http_options"])
    for application in raw["applications"]:
        assert not {"host", "port"} & set(application["args"])
        ServeConfig.model_validate({k: v for k, v in application["args"].items() if k != "index_dir"})


# ----------------------------------------------------------------------- C: the OpenAPI contract, live


@pytest.fixture(scope="module")
def world(tmp_path_factory, offline_student):
    return make_serve_world(tmp_path_factory.mktemp("contract-world"), offline_student)


@pytest.fixture(scope="module", params=TOPOLOGIES)
def server(world, ray_session, request):
    """With an API key and CORS, so the schema documents 401 and schemathesis checks auth is enforced.

    At most 16 embedding inputs per request: the largest valid request must answer within schemathesis's
    response-time limit on a busy 2-core CPU (256 took ~30 s there); the contract logic is the same.
    Once per topology: the routes are the same code, the backends behind them are not.
    """
    cfg = ServeConfig(version_poll_s=0.3, max_k=20, max_embedding_inputs=16, api_key_env="DISTILL_CONTRACT_KEY",
                      cors_origins=["http://shop.example"], topology=request.param)
    secret = {"runtime_env": {"env_vars": {"DISTILL_CONTRACT_KEY": API_KEY}}}
    with running_retriever(world["index"], cfg, api_actor_options=secret) as running:
        running["openapi"] = running["client"].get("/openapi.json", headers=KEY).json()
        yield running


def response_schema(openapi: dict, path: str, method: str, status: int) -> dict:
    """The documented JSON schema of one response, with the document's components to resolve $refs."""
    response = openapi["paths"][path][method]["responses"][str(status)]
    return {**response["content"]["application/json"]["schema"], "components": openapi["components"]}


def request_schema(openapi: dict, path: str) -> dict:
    body = openapi["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    return {**body, "components": openapi["components"]}


BAD_BODIES = [
    ("/search", {"query": "", "k": 3}),
    ("/search", {"query": "ball", "k": "5"}),
    ("/search", {"query": {"kind": "conversation", "turns": []}}),
    ("/search", {"query": {"kind": "composed", "modification": "in red"}}),  # no reference
    ("/search", {"query": {"kind": "composed", "reference_image": "not base64!", "modification": "x"}}),
    ("/v1/embeddings", {"input": ["ok", " "]}),
    ("/v1/embeddings", {"input": "a", "dimensions": 3}),  # checked after embedding, same body
]


def test_search_request_schema_documents_every_query_kind(server):
    """The string body of old, and one object per kind (a oneOf on `kind`, with examples); rerank a boolean."""
    schema = request_schema(server["openapi"], "/search")
    for body in [{"query": "a red ball", "k": 3},
                 {"query": {"kind": "text", "text": "a red ball"}, "rerank": True},
                 {"query": {"kind": "conversation", "turns": [{"role": "user", "content": "a toy"}]}},
                 {"query": {"kind": "composed", "reference_item": "item-000", "modification": "in red"}},
                 {"query": {"kind": "composed", "reference_image": png_b64(), "modification": "in red"}}]:
        jsonschema.validate(body, schema)
    for bad in [{"query": {"kind": "conversation", "turns": []}},
                {"query": {"kind": "conversation", "turns": [{"role": "assistant", "content": "hi"}]}},
                {"query": {"kind": "composed", "reference_item": "a", "reference_image": png_b64(),
                           "modification": "x"}},
                {"query": {"kind": "composed", "modification": "x"}},
                {"query": "ball", "rerank": "yes"}]:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
    components = server["openapi"]["components"]["schemas"]
    assert {"TextQuery", "ConversationQuery", "ComposedQuery"} <= set(components)
    assert all(components[n].get("examples") for n in ("TextQuery", "ConversationQuery", "ComposedQuery"))
    responses = server["openapi"]["paths"]["/search"]["post"]["responses"]
    assert {"404", "413", "415", "422"} <= set(responses)


@pytest.mark.parametrize("path,body", BAD_BODIES)
def test_every_422_body_is_the_documented_one(server, path, body):
    r = server["client"].post(path, json=body, headers=KEY)
    assert r.status_code == 422, r.text
    jsonschema.validate(r.json(), response_schema(server["openapi"], path, "post", 422))
    assert isinstance(r.json()["detail"], str) and r.json()["errors"], r.text


def test_error_statuses_the_routes_answer_are_documented(server):
    c, openapi = server["client"], server["openapi"]
    missing = c.get("/items/no-such-item/image", headers=KEY)
    assert missing.status_code == 404
    jsonschema.validate(missing.json(), response_schema(openapi, "/items/{item_id}/image", "get", 404))
    denied = c.post("/search", json={"query": "ball"})
    assert denied.status_code == 401
    jsonschema.validate(denied.json(), response_schema(openapi, "/search", "post", 401))
    large = c.post("/v1/embeddings", content=b"x" * 70_000, headers={**KEY, "content-type": "application/json"})
    assert large.status_code == 413
    jsonschema.validate(large.json(), response_schema(openapi, "/v1/embeddings", "post", 413))
    for query, status in [({"kind": "composed", "reference_item": "no-such-item", "modification": "red"}, 404),
                          ({"kind": "composed", "reference_image": png_b64(fmt="GIF"), "modification": "red"}, 415)]:
        r = c.post("/search", json={"query": query}, headers=KEY)
        assert r.status_code == status, r.text
        jsonschema.validate(r.json(), response_schema(openapi, "/search", "post", status))


@pytest.mark.parametrize("body", [{"input": ""}, {"input": " \t"}, {"input": []}, {"input": ["x" * 2001]}])
def test_embedding_inputs_the_server_rejects_are_invalid_in_its_schema(server, body):
    schema = request_schema(server["openapi"], "/v1/embeddings")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(body, schema)
    assert server["client"].post("/v1/embeddings", json=body, headers=KEY).status_code == 422


def test_open_healthz_shows_no_paths_and_status_needs_the_key(server, world):
    c = server["client"]
    health = c.get("/healthz")  # no key
    assert health.status_code == 200 and health.json() == {"status": "ok", "version": world["v1"]["version"]}
    assert str(world["root"]) not in health.text
    assert c.get("/status").status_code == 401
    status = c.get("/status", headers=KEY).json()
    assert status["model"] == str(Path(world["model"]).resolve()) and status["ntotal"] == 11


ST_HOOKS = """
import schemathesis


@schemathesis.hook
def map_case(context, case):
    body, meta = case.body, case.meta
    if meta is not None and meta.generation.mode.is_positive and isinstance(body, dict):
        query = body.get("query")
        if isinstance(query, dict) and isinstance(query.get("reference_image"), str):
            case.body = {{**body, "query": {{**query, "reference_image": "{png}"}}}}
    return case
"""


def test_schemathesis_finds_no_contract_violation(server, tmp_path):
    """Every check, every documented operation, EXAMPLES_PER_OPERATION generated cases each (about 1-2 min).

    `max_response_time` is 60 s, not the default 10 s: it is there to catch hangs, not to time a shared CPU.
    """
    st = Path(sys.executable).parent / "st"
    # Whether uploaded bytes decode as an image is beyond JSON Schema: a *positive* case that carries a
    # reference_image gets a real PNG, so "valid data is accepted" is checked for uploads too (negative
    # cases keep their generated strings and must be refused).
    (tmp_path / "st_hooks.py").write_text(ST_HOOKS.format(png=png_b64((30, 60, 220), (16, 16))))
    cmd = [str(st), "run", f"{server['url']}/openapi.json", "--checks", "all", "--max-examples",
           str(EXAMPLES_PER_OPERATION), "--header", f"X-API-Key: {API_KEY}", "--seed", "1", "--workers", "1",
           "--request-timeout", "60", "--max-response-time", "60", "--no-color"]
    t0 = time.time()
    # cwd: schemathesis keeps a .schemathesis/ cache in its working directory, not in the checkout.
    run = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=600, cwd=tmp_path,
                         env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_HOOKS": str(tmp_path / "st_hooks.py")})
    summary = run.stdout[-6000:]
    print(f"schemathesis: {time.time() - t0:.0f}s\n{summary}")
    assert run.returncode == 0, summary + run.stderr[-2000:]
    assert re.search(r"\b0 failures\b|No issues found", summary, re.IGNORECASE), summary
