"""Typed configuration from YAML: the one loader every package uses. ROS-free.

    cfg = load_dataclass(MyConfig, "file.yaml", overrides={"steps": 10})

- files are read with `yaml.safe_load` only (no Python objects from YAML);
- a key the dataclass does not have is an error that names it and lists the known keys, so a typo
  never silently falls back to a default;
- nested dataclass fields take nested mappings; `deep_merge` layers defaults <- preset <- file <-
  command line for the dict-shaped configs.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the file, the key and the fix."""


def read_yaml(path: str | os.PathLike, what: str = "config") -> dict:
    """A YAML mapping from `path` (safe_load); a clear error when missing, unreadable or not a mapping."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"{what} {p} not found; pass an existing YAML file")
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {p} is not valid YAML: {exc}") from exc
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{what} {p} must be a YAML mapping at the top level, got {type(doc).__name__}")
    return doc


def deep_merge(base: dict, override: dict | None) -> dict:
    """A copy of `base` with `override` merged in, recursively for nested mappings."""
    out = copy.deepcopy(base)
    for k, v in (override or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def check_keys(doc: dict, known, where: str, what: str = "key") -> None:
    """Raise ConfigError naming every key of `doc` not in `known`."""
    unknown = sorted(set(doc) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown {what}(s) {unknown}; known: {sorted(known)}")


def from_dict(cls: type[T], data: dict | None, where: str = "config") -> T:
    """Build dataclass `cls` from a mapping; nested dataclass fields from nested mappings."""
    data = dict(data or {})
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    check_keys(data, fields, where)
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        sub = hints.get(name)
        if dataclasses.is_dataclass(sub) and isinstance(value, dict):
            value = from_dict(sub, value, f"{where}.{name}")
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def load_dataclass(cls: type[T], path: str | os.PathLike | None = None, overrides: dict | None = None) -> T:
    """`cls` from its defaults <- YAML file (optional) <- overrides."""
    doc = read_yaml(path, cls.__name__) if path else {}
    return from_dict(cls, deep_merge(doc, overrides), str(path or cls.__name__))
