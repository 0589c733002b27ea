"""Resolving a method's hyperparameters: schema defaults, then model-dependent defaults, then the
user's overrides, validated against the method's JSON Schema. The result is what a run records."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema

from harness.api import HarnessError, Method

if TYPE_CHECKING:
    from harness.models.handle import ModelHandle


def schema_defaults(schema: Mapping[str, Any]) -> dict[str, Any]:
    return {key: prop["default"] for key, prop in schema.get("properties", {}).items() if "default" in prop}


def parse_assignments(assignments: Iterable[str]) -> dict[str, Any]:
    """`KEY=VALUE` strings from `--set`; a VALUE that parses as JSON is taken as JSON
    (`layers=[4,5]`, `v_lr=0.5`, `mom2_adjustment=true`), anything else as a string. A KEY may be
    scoped to one method of a run as `METHOD.KEY` (`rome.v_lr=2`); see `overrides_for`."""
    overrides: dict[str, Any] = {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise HarnessError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            overrides[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            overrides[key.strip()] = raw
    return overrides


def scope_of(key: str) -> tuple[str, str]:
    """`(METHOD, KEY)` of an override key: `("rome", "v_lr")` for `rome.v_lr`, `("", "lr")` for `lr`."""
    method, _, name = key.rpartition(".")
    return method, name


def overrides_for(method: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The overrides that apply to one method: every plain `KEY`, and `METHOD.KEY` for this method,
    which wins over a plain `KEY` (so `--set lr=1e-3 --set rome.v_lr=2` serves a mixed run)."""
    scoped = [(scope_of(key), value) for key, value in overrides.items()]
    plain = {name: value for (scope, name), value in scoped if not scope}
    own = {name: value for (scope, name), value in scoped if scope == method}
    return {**plain, **own}


def load_hparams_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise HarnessError(f"hparams file {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise HarnessError(f"hparams file {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise HarnessError(f"hparams file {path} must hold a JSON object")
    return data


def check_names(method: Method | type[Method], names: Iterable[str], hint: str = "") -> None:
    """Refuse hyperparameter names the method's schema does not have, naming the known ones."""
    known = set(method.hparams_schema.get("properties", {}))
    unknown = sorted(set(names) - known)
    if unknown:
        raise HarnessError(
            f"method {method.name!r} has no hyperparameter {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(sorted(known)) or 'none'}{hint}"
        )


def resolve_hparams(
    method: Method, handle: ModelHandle | None, overrides: Mapping[str, Any]
) -> dict[str, Any]:
    """The hyperparameters a method runs with. Unknown keys and wrong types are errors that name
    the method and the key, raised before any edit."""
    check_names(method, overrides)
    schema = method.hparams_schema
    values = schema_defaults(schema)
    if handle is not None:
        values.update(method.default_hparams(handle))
    values.update(overrides)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(values), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = ".".join(str(p) for p in first.absolute_path) or "(top level)"
        raise HarnessError(f"method {method.name!r}: hyperparameter {where}: {first.message}")
    return values
