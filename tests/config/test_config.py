"""The config package: torch-free loading, the shared value types (`Split`, `Trainable`) and key-naming errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest

from distill.config import ConfigError, PipelineConfig, Split, load_pipeline_config, validate
from distill.config.student import StudentSpec
from distill.schemas import SPLITS

ROOT = Path(__file__).resolve().parents[2]


def test_loading_a_config_never_imports_torch():
    # In a fresh interpreter: this one has torch loaded by other tests already.
    code = ("import sys, distill.config, distill.config.pipeline, distill.config.student, distill.config.types\n"
            "distill.config.load_pipeline_config('configs/production.yaml')\n"
            "heavy = sorted(m for m in ('torch', 'open_clip', 'ray') if m in sys.modules)\n"
            "assert not heavy, heavy\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr


def test_split_type_agrees_with_the_schema():
    assert get_args(Split) == SPLITS == ("train", "val", "test")


@pytest.mark.parametrize("key", ["label.split", "evaluate.split", "index.split"])
def test_an_unknown_split_fails_naming_the_key(key):
    with pytest.raises(ConfigError) as err:
        load_pipeline_config(ROOT / "configs/embedded.yaml", [f"{key}=validation"])
    assert f"{key}:" in str(err.value) and "'train', 'val' or 'test'" in str(err.value)
    for split in SPLITS:  # every real split still loads
        load_pipeline_config(ROOT / "configs/embedded.yaml", [f"{key}={split}"])


def test_an_unknown_key_fails_naming_it():
    with pytest.raises(ConfigError, match=r"unknown key 'label\.splt'"):
        load_pipeline_config(ROOT / "configs/embedded.yaml", ["label.splt=train"])
    with pytest.raises(ConfigError, match=r"unknown key 'student\.trainble'"):
        validate(PipelineConfig, {"student": {"trainble": 0}})


def test_trainable_has_one_default_and_stage_overrides():
    defaults = PipelineConfig()
    assert StudentSpec().trainable == defaults.student.trainable == "all"
    assert defaults.align.trainable is None and defaults.train.trainable is None  # null: the student's own


@pytest.mark.parametrize("key", ["student.trainable", "align.trainable", "train.trainable"])
def test_trainable_is_one_type_everywhere(key):
    for value, expected in (("all", "all"), ("0", 0), ("3", 3)):
        cfg = load_pipeline_config(None, [f"{key}={value}"])
        section, field = key.split(".")
        assert getattr(getattr(cfg, section), field) == expected
    for bad in ("-1", "some", "1.5"):
        with pytest.raises(ConfigError, match=rf"{key}"):
            load_pipeline_config(None, [f"{key}={bad}"])


def test_shipped_configs_keep_their_effective_trainable():
    # embedded: the student is "all", but alignment and training both fit the projection only over the frozen trunk;
    # production: the whole tower fine-tunes (align disabled, train inherits the student's "all").
    emb = load_pipeline_config(ROOT / "configs/embedded.yaml")
    assert (emb.student.trainable, emb.align.trainable, emb.train.trainable) == ("all", 0, 0)
    prod = load_pipeline_config(ROOT / "configs/production.yaml")
    assert (prod.student.trainable, prod.align.enabled, prod.train.trainable) == ("all", False, None)
