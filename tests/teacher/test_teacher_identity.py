"""The teacher id covers every setting that can change an answer (a cached answer is keyed by it)."""

from __future__ import annotations

import pytest

from distill.config.teacher import TeacherConfig
from distill.teacher import teacher_id_for
from distill.teacher.identity import (
    ANSWER_NEUTRAL,
    BACKENDS,
    HEAD_FIELDS,
    ID_BASELINE,
    UnclassifiedTeacherSetting,
    flat_settings,
)


def _other_value(value):
    """A different valid value of the same type (the config validates it)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 16
    if isinstance(value, float):
        return round(value / 2 + 0.05, 4)
    if isinstance(value, dict):
        return {**value, "seed": 7}
    if value in ("v1", "none"):  # the CPU teacher's taste (a Literal)
        return "none" if value == "v1" else "v1"
    if isinstance(value, str):
        return value + "-x"
    if value is None:
        return "L4"
    raise AssertionError(f"no perturbation for {value!r}")


def _with(cfg: TeacherConfig, name: str, value) -> TeacherConfig:
    data = cfg.model_dump()
    section, _, key = name.rpartition(".")
    (data[section] if section else data)[key] = value
    return TeacherConfig.model_validate(data)


def _fields() -> list[str]:
    return sorted(flat_settings(TeacherConfig()))


def test_every_teacher_setting_is_classified():
    unclassified = [n for n in _fields() if n not in ID_BASELINE and n not in ANSWER_NEUTRAL and n not in HEAD_FIELDS]
    assert not unclassified, f"classify these in distill/teacher/identity.py: {unclassified}"
    assert not set(ANSWER_NEUTRAL) & set(ID_BASELINE)


def _section(name: str) -> str | None:
    return name.split(".")[0] if "." in name else None


def _value(cfg: TeacherConfig, name: str):
    data = cfg.model_dump()
    return data[_section(name)][name.split(".")[1]] if _section(name) else data[name]


def _perturbed_ids(backend: str, keep) -> dict[str, tuple[str, str]]:
    """name -> (default id, id with that setting changed), for the fields `keep(name)` selects."""
    cfg = TeacherConfig(backend=backend)
    return {name: (teacher_id_for(cfg), teacher_id_for(_with(cfg, name, _other_value(_value(cfg, name)))))
            for name in _fields() if name != "backend" and keep(name)}


@pytest.mark.parametrize("backend", BACKENDS)
def test_changing_any_answer_setting_of_the_active_backend_changes_the_id(backend):
    def answer_setting(name):
        return name not in ANSWER_NEUTRAL and _section(name) in (None, backend)

    for name, (before, after) in _perturbed_ids(backend, answer_setting).items():
        assert after != before, f"{name} changes answers but not the teacher id"


@pytest.mark.parametrize("backend", BACKENDS)
def test_neutral_and_other_backend_settings_keep_the_id(backend):
    def no_answer_setting(name):
        return name in ANSWER_NEUTRAL or _section(name) not in (None, backend)

    changed = _perturbed_ids(backend, no_answer_setting)
    assert changed and all(before == after for before, after in changed.values()), changed


def test_defaults_keep_the_short_readable_ids():
    # The literal teacher of earlier versions keeps its id, so stores written by it keep working;
    # the default CPU teacher reads taste (`cpu.taste: v1`) and says so.
    assert teacher_id_for(TeacherConfig(cpu={"taste": "none"})) == "cpu:minilm-l6-v2:rank-v1:t=0"
    assert teacher_id_for(TeacherConfig()) == "cpu:minilm-l6-v2:rank-v1:t=0:cpu.taste=v1"
    assert teacher_id_for(TeacherConfig(backend="vllm")) == "vllm:Qwen/Qwen2.5-VL-7B-Instruct:rank-v1:t=0:px=200704"


def test_image_size_and_shuffling_are_in_the_id():
    """Regression: both changed what the teacher sees but reused cached answers."""
    base = teacher_id_for(TeacherConfig())
    assert teacher_id_for(TeacherConfig(image_size=336)) == base + ":image_size=336"
    assert teacher_id_for(TeacherConfig(shuffle_presentation=False)) == base + ":shuffle_presentation=false"


def test_an_unclassified_setting_is_an_error(monkeypatch):
    import distill.teacher.identity as identity

    monkeypatch.delitem(identity.ID_BASELINE, "image_size")
    with pytest.raises(UnclassifiedTeacherSetting, match="image_size"):
        teacher_id_for(TeacherConfig())
