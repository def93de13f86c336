"""Typed configuration: pydantic models that reject unknown keys, loaded from YAML with CLI overrides.

Every stage owns one config class; `PipelineConfig` (in `distill.config.pipeline`) groups them so the
embedded and production YAML files are validated by the same schema.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

T = TypeVar("T", bound=BaseModel)


class StrictModel(BaseModel):
    """Base for every config: unknown keys are errors, not silently ignored typos."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class ConfigError(ValueError):
    """A config file or override that does not validate; the message names the key and the file."""


def _parse_scalar(text: str) -> Any:
    # YAML parsing gives ints, floats, bools, null and lists for free ("[1,2]").
    return yaml.safe_load(text)


def apply_overrides(data: dict, overrides: list[str] | None) -> dict:
    """Apply `dotted.key=value` overrides to a nested dict (values parsed as YAML)."""
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key.path=value")
        dotted, raw = item.split("=", 1)
        node = data
        keys = dotted.strip().split(".")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {key!r} is not a section")
        node[keys[-1]] = _parse_scalar(raw)
    return data


def format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid config {source}:"]
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            lines.append(f"  unknown key '{where}'")
        else:
            lines.append(f"  {where}: {e['msg']}")
    return "\n".join(lines)


def validate(cls: type[T], data: dict, source: str = "<dict>") -> T:
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None


def load_config(cls: type[T], path: str | Path | None, overrides: list[str] | None = None) -> T:
    """Load `path` (YAML) into `cls`, apply overrides; raise ConfigError naming any bad key."""
    data: dict = {}
    source = "<defaults>"
    if path is not None:
        source = str(path)
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
    data = apply_overrides(data, overrides)
    return validate(cls, data, source)


def dump_config(cfg: BaseModel) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def with_overrides(cfg: T, values: dict) -> T:
    """A copy of a config with dotted keys set (validated like a config file)."""
    data = cfg.model_dump()
    for dotted, value in values.items():
        node = data
        *parents, key = dotted.split(".")
        for p in parents:
            node = node[p]
        if key not in node:
            raise KeyError(f"unknown config key {dotted!r}")
        node[key] = value
    return type(cfg).model_validate(data)
