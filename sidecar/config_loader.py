"""Builds the SidecarConfig from its sources and remembers where each value came from.

Precedence, lowest first: built-in defaults, the YAML file (`--config FILE`),
environment variables (`GPU_SIDECAR_BATCH_MAX_SIZE` for `sidecar.batch.max-size`),
command-line flags (`--batch-max-size 32` or `-D sidecar.batch.max-size=32`).
An unknown key, a bad value or a contradiction fails with a message naming the
key, the value, its source and what is allowed.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sidecar.config import KEYS, SidecarConfig

ENV_PREFIX = "GPU_SIDECAR_"


class ConfigError(ValueError):
    """The configuration cannot be used; the message says which key and why."""


@dataclass(frozen=True, slots=True)
class Loaded:
    config: SidecarConfig
    sources: dict[str, str]  # key -> "default", "file x.yaml", "env GPU_SIDECAR_...", "flag --..."

    def describe(self) -> list[tuple[str, str, str]]:
        """(key, shown value, source) for every key, in table order."""
        return [
            (k, spec.show(getattr(self.config, spec.field)), self.sources[k]) for k, spec in KEYS.items()
        ]


def env_name(key: str) -> str:
    return ENV_PREFIX + key.removeprefix("sidecar.").replace(".", "_").replace("-", "_").upper()


def flag_name(key: str) -> str:
    return "--" + key.removeprefix("sidecar.").replace(".", "-")


_BY_ENV = {env_name(k): k for k in KEYS}


def load(
    file: Path | None = None,
    env: Mapping[str, str] | None = None,
    flags: Iterable[tuple[str, Any, str]] = (),
) -> Loaded:
    """`flags` holds (key, raw value, how it was given, e.g. '--batch-max-size')."""
    raw: dict[str, tuple[Any, str]] = {}
    options: dict[tuple[str, str], str] = {}  # (backend, option) -> value
    if file is not None:
        for k, v in _read_yaml(file).items():
            if not _backend_option(k, v, f"file {file}", options):
                raw[_known(k, f"file {file}")] = (v, f"file {file}")
    for name, v in (env or {}).items():
        if name.startswith(ENV_PREFIX):
            if name not in _BY_ENV:
                raise ConfigError(f"unknown environment variable {name}{_suggest(name, _BY_ENV)}")
            raw[_BY_ENV[name]] = (v, f"env {name}")
    for k, v, how in flags:
        if not _backend_option(k, v, f"flag {how}", options):
            raw[_known(k, f"flag {how}")] = (v, f"flag {how}")
    if options:
        values_options = tuple((b, o, v) for (b, o), v in sorted(options.items()))
    else:
        values_options = ()

    values: dict[str, Any] = {}
    sources = {k: "default" for k in KEYS}
    for k, (v, source) in raw.items():
        spec = KEYS[k]
        if v is None:
            raise ConfigError(f"{k} (from {source}) has no value; give one or remove the key")
        try:
            values[spec.field] = spec.kind.parse(v)
        except ValueError:
            raise ConfigError(f"{k}: {v!r} (from {source}) is not allowed; expected {spec.kind.allowed}") from None
        sources[k] = source
    try:
        config = SidecarConfig(**values, backend_options=values_options)
    except ValueError as e:
        raise ConfigError(_with_sources(str(e), sources)) from None
    return Loaded(config, sources)


def parse_assignment(text: str) -> tuple[str, str]:
    """`-D key=value` -> (key, value)."""
    k, sep, v = text.partition("=")
    if not sep or not k.strip():
        raise ConfigError(f"-D expects key=value, got {text!r}")
    return k.strip(), v.strip()


def _read_yaml(file: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(file).read_text())
    except OSError as e:
        raise ConfigError(f"cannot read config file {file}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {file} is not UTF-8 text") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {file} is not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {file} must hold a mapping of keys to values")
    return dict(_flatten(data))


def _flatten(data: Mapping[Any, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    """Accepts both `sidecar.batch.max-size: 32` and nested `sidecar: {batch: {max-size: 32}}`."""
    for k, v in data.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from _flatten(v, name + ".")
        else:
            yield name, v


def _backend_option(k: str, v: Any, source: str, into: dict[tuple[str, str], str]) -> bool:
    """`sidecar.backend.<name>.<option>` (four parts or more, so never one of the
    sidecar.backend.* keys): a backend's own option, kept as text. True if it was one."""
    parts = k.split(".")
    if len(parts) < 4 or parts[:2] != ["sidecar", "backend"] or k in KEYS:
        return False
    if v is None or isinstance(v, (dict, list)):
        raise ConfigError(f"{k} (from {source}) must be a single value")
    into[(parts[2], ".".join(parts[3:]))] = str(v).lower() if isinstance(v, bool) else str(v)
    return True


def _known(k: str, source: str) -> str:
    if k not in KEYS:
        raise ConfigError(f"unknown configuration key {k!r} (from {source}){_suggest(k, KEYS)}")
    return k


def _suggest(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else "; known keys are listed in docs/configuration.md"


def _with_sources(message: str, sources: Mapping[str, str]) -> str:
    """`sidecar.x (5 s)` -> `sidecar.x (5 s, from env GPU_SIDECAR_X)`."""
    for k, source in sources.items():
        message = re.sub(rf"{re.escape(k)} \(([^)]*)\)", lambda m, k=k, s=source: f"{k} ({m.group(1)}, from {s})", message)
    return message
