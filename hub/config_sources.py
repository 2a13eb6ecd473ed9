"""Where the hub's settings come from, and the loud errors when a name or a value is wrong.

pydantic-settings reads ``VIGIE_HUB_<FIELD>`` (``__`` into nested models) by itself. This module adds
what it does not do: the older variable names still in use (``VIGIE_MQTT_HOST``, ``VIGIE_HUB_H3_RES``,
…), a YAML file that must exist and hold only known keys, and an error for any ``VIGIE_HUB_*``
variable that names no setting: a misspelt variable would otherwise be silently ignored.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, YamlConfigSettingsSource

from vigie.exceptions import ConfigError

__all__ = [
    "CONFIG_ENV",
    "ENV_PREFIX",
    "LEGACY_ENV",
    "EnvNamesSource",
    "YamlFileSource",
    "describe_validation_error",
    "env_names",
    "field_paths",
]

ENV_PREFIX = "VIGIE_HUB_"
#: The variable naming the YAML file of settings (the field ``config``).
CONFIG_ENV = "VIGIE_HUB_CONFIG"
#: Names in use before the settings object, each the path of the setting it sets. They keep working.
LEGACY_ENV: dict[str, tuple[str, ...]] = {
    "VIGIE_MQTT_HOST": ("broker", "host"),
    "VIGIE_MQTT_PORT": ("broker", "port"),
    "VIGIE_MQTT_USERNAME": ("broker", "username"),
    "VIGIE_MQTT_PASSWORD": ("broker", "password"),
    "VIGIE_HUB_FUSION_EVERY": ("fusion_every_s",),
    "VIGIE_HUB_TOKEN_TTL": ("token_ttl_s",),
    "VIGIE_HUB_H3_RES": ("h3_resolution",),
    "VIGIE_HUB_DPO": ("dpo_contact",),
}
#: The enrolment folder of the broker's TLS files (the agent's name for it): sets three settings at once.
TLS_DIR_ENV = "VIGIE_MQTT_TLS_DIR"
_TLS_FILES = {"tls_ca": "ca.crt", "tls_cert": "device.crt", "tls_key": "device.key"}
_SECRET_WORDS = ("PASS", "SECRET")  # a misspelt PASWORD is still a password


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def field_paths(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every leaf setting as a path: ``("k",)``, ``("retention", "events_days")``, …"""
    for name, info in model.model_fields.items():
        nested = _nested_model(info.annotation)
        if nested is None:
            yield (*prefix, name)
        else:
            yield from field_paths(nested, (*prefix, name))


def env_names(path: tuple[str, ...]) -> list[str]:
    """The variables that set ``path``: its ``VIGIE_HUB_`` name first, then any older name."""
    names = [ENV_PREFIX + "__".join(path).upper()]
    names += [old for old, target in LEGACY_ENV.items() if target == path]
    if path[0] == "broker" and path[-1] in _TLS_FILES:
        names.append(TLS_DIR_ENV)
    return names


def _leaf_names(settings_cls: type[BaseModel]) -> set[str]:
    return {name for path in field_paths(settings_cls) for name in env_names(path)}


def _model_names(settings_cls: type[BaseModel]) -> set[str]:
    # A whole nested model may also be given as JSON (VIGIE_HUB_RETENTION='{"events_days": 30}').
    return {ENV_PREFIX + name.upper() for name, info in settings_cls.model_fields.items()
            if _nested_model(info.annotation)}  # fmt: skip


def _shown(name: str, value: object) -> str:
    return "'***'" if any(word in name.upper() for word in _SECRET_WORDS) else repr(value)


def _did_you_mean(name: str, candidates: set[str]) -> str:
    close = difflib.get_close_matches(name, sorted(candidates), n=1, cutoff=0.5)
    return f"did you mean {close[0]}? " if close else ""


def _put(tree: dict[str, Any], path: tuple[str, ...], value: object) -> None:
    for part in path[:-1]:
        tree = tree.setdefault(part, {})
    tree[path[-1]] = value


class EnvNamesSource(PydanticBaseSettingsSource):
    """Refuses unknown ``VIGIE_HUB_*`` variables; reads the older names (below ``VIGIE_HUB_<FIELD>``)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str] | None = None) -> None:
        super().__init__(settings_cls)
        self.environ = os.environ if environ is None else environ

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError  # __call__ reads everything at once

    def __call__(self) -> dict[str, Any]:
        leaves = _leaf_names(self.settings_cls)
        known = leaves | _model_names(self.settings_cls)
        for name, value in self.environ.items():
            if name.upper().startswith(ENV_PREFIX) and name.upper() not in known:
                raise ConfigError(
                    f"unknown hub setting {name}={_shown(name, value)} in the environment: "
                    f"{_did_you_mean(name.upper(), leaves)}"
                    "Fix or unset it (every setting is listed in docs/configuration.md)."
                )
        values: dict[str, Any] = {}
        for old, path in LEGACY_ENV.items():
            given = self.environ.get(old)
            if not given:
                continue  # empty means unset, as before
            new = env_names(path)[0]
            if self.environ.get(new) not in (None, "", given):
                raise ConfigError(
                    f"{old}={_shown(old, given)} and {new}={_shown(new, self.environ[new])} both set "
                    f"the hub's {'.'.join(path)}: keep one (they are the same setting)."
                )
            _put(values, path, given)
        if tls_dir := self.environ.get(TLS_DIR_ENV):
            for field, file in _TLS_FILES.items():
                _put(values, ("broker", field), str(Path(tls_dir) / file))
        return values


def _check_keys(data: object, model: type[BaseModel], file: Path, where: str = "") -> None:
    if not isinstance(data, dict):
        raise ConfigError(
            f"{file}: {where or 'the file'} must be a mapping of setting: value, not {_shown(where, data)}"
        )
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        info = model.model_fields.get(str(key))
        if info is None:
            raise ConfigError(
                f"{file}: unknown hub setting {path}: {_shown(path, value)}; "
                f"{_did_you_mean(str(key), set(model.model_fields))}"
                "Fix or remove the key (every setting is listed in docs/configuration.md)."
            )
        nested = _nested_model(info.annotation)
        if nested is not None and value is not None:
            _check_keys(value, nested, file, path)


class YamlFileSource(YamlConfigSettingsSource):
    """The YAML file of settings: it must exist, parse, and hold only known keys (nested as the model)."""

    def __init__(self, settings_cls: type[BaseSettings], yaml_file: Path) -> None:
        if not yaml_file.is_file():
            raise ConfigError(
                f"hub config file {yaml_file} not found (from {CONFIG_ENV} or --config): "
                "give the path of an existing YAML file, or unset it."
            )
        self._model = settings_cls
        super().__init__(settings_cls, yaml_file)

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        try:
            data = yaml.safe_load(Path(file_path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"hub config file {file_path} cannot be read: {exc}") from None
        _check_keys(data, self._model, Path(file_path))
        if "config" in data:
            raise ConfigError(f"{file_path}: `config` names this file; it cannot be set inside it.")
        return dict(data)


def _origin(
    path: tuple[str, ...], init: Mapping[str, Any], config: Path | None, env: Mapping[str, str]
) -> str:
    """Where the value at ``path`` came from, in the words the user wrote it with."""
    if path and path[0] in init:
        return f"argument {'.'.join(path)}"
    for name in env_names(path) if path else []:
        if env.get(name):
            return f"{name} (environment)"
    return f"{config}: {'.'.join(path)}" if config is not None else "setting " + ".".join(path)


def describe_validation_error(
    exc: ValidationError, init: Mapping[str, Any], config: Path | None, env: Mapping[str, str] | None = None
) -> str:
    """One line per wrong value: which setting, from where, the value given, and what it should be."""
    env = os.environ if env is None else env
    lines = []
    for error in exc.errors():
        path = tuple(str(part) for part in error["loc"])
        shown = _shown(".".join(path), error.get("input"))
        lines.append(f"  {_origin(path, init, config, env)} = {shown}: {error['msg']}")
    return "invalid hub settings (see docs/configuration.md):\n" + "\n".join(lines)
