"""Deployment files are checked by the tools that consume them: cluster.yaml by the Ray autoscaler's own schema and
config preparation, configs/*.yaml by distill.config.pipeline.PipelineConfig, and the KubeRay manifests and their
image (deploy/Dockerfile) against the files they must agree with (production config, Serve config, pinned Ray
version, the build command the docs give)."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import yaml

from distill.config.loading import ConfigError
from distill.config.pipeline import load_pipeline_config

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_YAML = ROOT / "cluster.yaml"
KUBERAY = ROOT / "deploy" / "kuberay"
SERVE_CONFIG = ROOT / "serve" / "serve_config.yaml"
PIPELINE_CONFIGS = ["configs/embedded.yaml", "configs/production.yaml"]
# EC2 instance families whose GPU Ray names (EC2 GpuInfo name == nvidia-smi model token).
GPU_OF_INSTANCE_FAMILY = {"g6": "L4", "g6e": "L40S", "g5": "A10G", "p4d": "A100", "p4de": "A100", "p5": "H100"}


def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _locked_ray_version() -> str:
    match = re.search(r"^ray==(\S+)$", (ROOT / "requirements.lock").read_text(), re.M)
    assert match, "requirements.lock pins no ray version"
    return match.group(1)


def _image_ray_version(image: str) -> str:
    # rayproject/ray-llm:2.60.0-py311-cu128 and distill:2.60.0-py311-cu128 -> 2.60.0
    match = re.search(r":(\d+\.\d+\.\d+)-py\d+", image)
    assert match, f"image {image!r} has no <ray version>-py<NN> tag"
    return match.group(1)


# ---------------------------------------------------------------------------------------------- cluster.yaml


@pytest.fixture(scope="module")
def cluster() -> dict:
    return _yaml(CLUSTER_YAML)


def test_cluster_yaml_passes_the_autoscaler_schema(cluster):
    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    # The file as written (no unknown keys anywhere), then what `ray up` validates: the config merged with the
    # AWS provider defaults (ray/autoscaler/_private/commands.py: _bootstrap_config).
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(cluster, schema)
    prepared = prepare_config(copy.deepcopy(cluster))
    validate_config(prepared)
    assert prepared["head_node_type"] == "head"


def test_autoscaler_schema_rejects_a_misspelt_key(cluster):
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    broken = copy.deepcopy(cluster)
    broken["available_node_types"]["gpu_worker"]["max_worker"] = 2  # typo of max_workers
    with pytest.raises(jsonschema.ValidationError, match="max_worker"):
        validate_config(prepare_config(broken))


def test_head_runs_no_tasks_and_gpu_and_cpu_worker_types_exist(cluster):
    types = cluster["available_node_types"]
    assert types[cluster["head_node_type"]]["resources"] == {"CPU": 0}
    gpu_family = types["gpu_worker"]["node_config"]["InstanceType"].split(".")[0]
    assert gpu_family in GPU_OF_INSTANCE_FAMILY, f"gpu_worker is not a GPU instance type ({gpu_family})"
    cpu_family = types["cpu_worker"]["node_config"]["InstanceType"].split(".")[0]
    assert cpu_family not in GPU_OF_INSTANCE_FAMILY
    assert types["gpu_worker"]["max_workers"] >= 1 and types["cpu_worker"]["max_workers"] >= 1


def test_gpu_worker_matches_production_teacher_and_training(cluster):
    prod = load_pipeline_config(ROOT / "configs/production.yaml")
    family = cluster["available_node_types"]["gpu_worker"]["node_config"]["InstanceType"].split(".")[0]
    assert prod.teacher.backend == "vllm"
    assert prod.teacher.vllm.accelerator_type == GPU_OF_INSTANCE_FAMILY[family]
    assert prod.train.use_gpu is True


def test_image_is_pinned_to_the_locked_ray_version(cluster):
    image = cluster["docker"]["image"]
    assert image.startswith("rayproject/ray-llm:"), "one image with Ray and the vLLM that ray[llm] pins"
    assert _image_ray_version(image) == _locked_ray_version()


def test_every_node_installs_the_project(cluster):
    assert cluster["file_mounts"]["~/distill"] == "."
    commands = " ".join(cluster["setup_commands"])
    assert 'pip install -q -c /tmp/image-pins.txt -e "$HOME/distill[gpu]"' in commands
    assert "faiss-cpu" not in commands.replace("#", "") or "uninstall -y faiss-cpu" in commands


def test_dashboard_and_serve_ports_are_not_opened(cluster):
    rules = cluster["provider"]["security_group"].get("IpPermissions", [])
    opened = {(r.get("FromPort"), r.get("ToPort")) for r in rules}
    for port in (8265, 8000):
        assert not any(lo is not None and lo <= port <= hi for lo, hi in opened), f"port {port} is opened"
    for rule in rules:
        assert {"CidrIp": "0.0.0.0/0"} not in rule.get("IpRanges", [])
    head_start = " ".join(cluster["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    assert "RAY_AUTH_MODE=token" in head_start


# ------------------------------------------------------------------------------------------ pipeline configs


def _leaves(data: dict, prefix: str = ""):
    for key, value in data.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _at(data: dict, dotted: str):
    for key in dotted.split("."):
        data = data[key]
    return data


@pytest.mark.parametrize("rel", PIPELINE_CONFIGS)
def test_every_value_in_a_config_file_reaches_the_pipeline(rel):
    """No value is mis-nested, coerced into something else or dropped on the way into PipelineConfig."""
    raw = _yaml(ROOT / rel)
    loaded = load_pipeline_config(ROOT / rel).model_dump(mode="json")
    for dotted, value in _leaves(raw):
        assert _at(loaded, dotted) == value, f"{rel}: {dotted} = {value!r} in the file, {_at(loaded, dotted)!r} loaded"


@pytest.mark.parametrize("rel", PIPELINE_CONFIGS)
def test_teacher_budget_is_reachable_by_the_rounds(rel):
    """A budget above round 0 + rounds x groups_per_round is never spent; one below it silently drops rounds."""
    cfg = load_pipeline_config(ROOT / rel)
    planned = cfg.label.groups + cfg.train.rounds * cfg.train.groups_per_round
    assert cfg.train.budget in (None, planned), f"{rel}: budget {cfg.train.budget} but the rounds plan {planned}"


def test_production_vllm_context_fits_a_ranked_group():
    """max_model_len must hold a group's images at max_pixels (one Qwen-VL token per 28x28 patch) + the prompt."""
    cfg = load_pipeline_config(ROOT / "configs/production.yaml")
    vision_tokens = cfg.sampler.group_size * cfg.teacher.vllm.max_pixels // (28 * 28)
    prompt_and_answer = 300 + cfg.teacher.vllm.max_tokens
    assert cfg.teacher.vllm.max_model_len >= vision_tokens + prompt_and_answer


def test_unknown_key_is_an_error_naming_the_key(tmp_path):
    data = _yaml(ROOT / "configs/production.yaml")
    data["train"]["num_wrokers"] = 4
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as err:
        load_pipeline_config(bad)
    assert "unknown key 'train.num_wrokers'" in str(err.value)
    assert str(bad) in str(err.value)


def test_unknown_override_is_an_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"unknown key 'teacher\.vllm\.accelerator'"):
        load_pipeline_config(ROOT / "configs/production.yaml", ["teacher.vllm.accelerator=L4"])


def test_configuration_reference_is_current():
    """docs/configuration.md is generated from PipelineConfig: a new or changed field needs a regeneration."""
    import subprocess
    import sys

    check = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_config_docs.py"), "--check"],
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, f"{check.stderr.strip()} (python scripts/gen_config_docs.py regenerates it)"


# ------------------------------------------------------------------------------------------------- KubeRay


def _manifest(name: str) -> dict:
    docs = [d for d in yaml.safe_load_all((KUBERAY / name).read_text()) if d]
    assert len(docs) == 1, f"{name} should hold one resource"
    return docs[0]


def _pod_containers(cluster_spec: dict) -> list[dict]:
    pods = [cluster_spec["headGroupSpec"]["template"]] + [g["template"] for g in cluster_spec["workerGroupSpecs"]]
    return [c for pod in pods for c in pod["spec"]["containers"]]


@pytest.mark.parametrize("name, script", [("label-job.yaml", "label"), ("train-job.yaml", "train")])
def test_rayjob_manifests(name, script):
    job = _manifest(name)
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    spec = job["spec"]
    assert spec["entrypoint"] == f"python ray_jobs/{script}.py --config configs/production.yaml"
    assert spec["shutdownAfterJobFinishes"] is True
    cluster_spec = spec["rayClusterSpec"]
    assert cluster_spec["rayVersion"] == _locked_ray_version()
    assert cluster_spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    gpu = [g for g in cluster_spec["workerGroupSpecs"] if g["groupName"] == "gpu"]
    assert gpu, "no GPU worker group"
    limits = gpu[0]["template"]["spec"]["containers"][0]["resources"]["limits"]
    prod = load_pipeline_config(ROOT / "configs/production.yaml")
    assert int(limits["nvidia.com/gpu"]) == prod.train.num_workers == prod.teacher.vllm.concurrency
    for container in _pod_containers(cluster_spec):
        assert _image_ray_version(container["image"]) == _locked_ray_version()
        env = {e["name"]: e for e in container["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token" and "secretKeyRef" in env["RAY_AUTH_TOKEN"]["valueFrom"]
        assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"]


def test_rayservice_carries_the_serve_config():
    service = _manifest("rayservice.yaml")
    assert (service["apiVersion"], service["kind"]) == ("ray.io/v1", "RayService")
    serve_v2 = yaml.safe_load(service["spec"]["serveConfigV2"])
    assert service["spec"]["rayClusterConfig"]["rayVersion"] == _locked_ray_version()
    assert serve_v2["applications"] == _yaml(SERVE_CONFIG)["applications"]


# ------------------------------------------------------------------------------------------ deploy/Dockerfile

DOCKERFILE = ROOT / "deploy" / "Dockerfile"
BUILD_COMMAND = re.compile(r"docker build -f deploy/Dockerfile -t (\S+) \.(?:\s|$)")


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, comments dropped and backslash continuations joined."""
    text = re.sub(r"\\\n", " ", "\n".join(line for line in DOCKERFILE.read_text().splitlines()
                                          if not line.lstrip().startswith("#")))
    pairs = [line.split(None, 1) for line in text.splitlines() if line.strip()]
    return [(op.upper(), args.strip()) for op, args in pairs]


def _manifest_images() -> set[str]:
    images = set()
    for name in ("label-job.yaml", "train-job.yaml"):
        spec = _manifest(name)["spec"]
        images |= {c["image"] for c in _pod_containers(spec["rayClusterSpec"])}
        images |= {c["image"] for c in spec["submitterPodTemplate"]["spec"]["containers"]}
    images |= {c["image"] for c in _pod_containers(_manifest("rayservice.yaml")["spec"]["rayClusterConfig"])}
    return images


def test_dockerfile_base_is_the_locked_ray_llm_image_of_cluster_yaml(cluster):
    froms = [args for op, args in _dockerfile_instructions() if op == "FROM"]
    assert len(froms) == 1, f"deploy/Dockerfile should have one stage, has FROM {froms}"
    base = froms[0]
    assert "$" not in base, "the base image is written out, not an ARG, so it can be checked and read"
    assert base.startswith("rayproject/ray-llm:"), "one image with Ray and the vLLM that ray[llm] pins"
    assert _image_ray_version(base) == _locked_ray_version()
    assert base == cluster["docker"]["image"], "the KubeRay image and the AWS launcher's nodes start from one base"


def test_dockerfile_installs_the_project_as_cluster_yaml_does(cluster):
    instructions = _dockerfile_instructions()
    assert ("COPY", "--chown=ray . /home/ray/distill") in instructions
    assert ("WORKDIR", "/home/ray/distill") in instructions
    run = " ".join(args for op, args in instructions if op == "RUN")
    # Same constraints as setup_commands: the image's Ray/vLLM/torch stay; requirements.lock is not installed.
    for command in cluster["setup_commands"]:
        if command.startswith("pip freeze"):
            assert command in run
    assert '-c /tmp/image-pins.txt -e "/home/ray/distill[gpu]"' in run
    assert "requirements.lock" not in run and "--force-reinstall" not in run
    # The RayJobs upload the repo baked into the image as their working directory.
    for name in ("label-job.yaml", "train-job.yaml"):
        assert yaml.safe_load(_manifest(name)["spec"]["runtimeEnvYAML"]) == {"working_dir": "/home/ray/distill"}


def test_dockerignore_keeps_the_context_to_the_repo():
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    for path in (".git", ".venv", "runs"):
        assert path in ignored
    for needed in ("distill", "serve", "ray_jobs", "configs", "pyproject.toml", "README.md"):
        assert not any(needed == entry.strip("/") for entry in ignored), f"{needed} is needed inside the image"


def test_manifests_run_the_image_the_docs_say_to_build():
    files = [DOCKERFILE, ROOT / "docs" / "operations.md", CLUSTER_YAML,
             KUBERAY / "label-job.yaml", KUBERAY / "train-job.yaml"]
    built = {path.name: set(BUILD_COMMAND.findall(path.read_text())) for path in files}
    for name, tags in built.items():
        assert len(tags) == 1, f"{name} should say once how to build it: {tags or 'no docker build -f deploy/...'}"
    (tag,) = set.union(*built.values())
    assert all(tags == {tag} for tags in built.values()), f"the docs name different images to build: {built}"
    assert _image_ray_version(tag) == _locked_ray_version()
    froms = [args for op, args in _dockerfile_instructions() if op == "FROM"]
    assert tag.split(":", 1)[1] == froms[0].split(":", 1)[1], "distill's tag mirrors its base's <ray>-py<NN>-<cuda>"
    assert _manifest_images() == {tag}
    for name in ("label-job.yaml", "train-job.yaml", "rayservice.yaml"):
        header = (KUBERAY / name).read_text()
        assert "deploy/Dockerfile" in header and "<<'EOF'" not in header
