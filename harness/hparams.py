"""Resolving a method's hyperparameters: schema defaults, then model-dependent defaults, then the
user's overrides, validated against the method's JSON Schema. The result is what a run records."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema

from harness.ground import HarnessError, Method

if TYPE_CHECKING:
    from harness.models.handle import ModelHandle


def schema_defaults(schema: Mapping[str, Any]) -> dict[str, Any]:
    return {key: prop["default"] for key, prop in schema.get("properties", {}).items() if "default" in prop}


def parse_assignments(assignments: Iterable[str]) -> dict[str, Any]:
    """`KEY=VALUE` strings from `--set`; a VALUE that parses as JSON is taken as JSON
    (`layers=[4,5]`, `lr=0.5`, `adjust=true`), anything else as a string. A KEY may be
    scoped to one method of a run as `METHOD.KEY` (`my-method.lr=2`); see `overrides_for`."""
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
    """`(METHOD, KEY)` of an override key: `("my-method", "lr")` for `my-method.lr`, `("", "lr")` for `lr`."""
    method, _, name = key.rpartition(".")
    return method, name


def overrides_for(method: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The overrides that apply to one method: every plain `KEY`, and `METHOD.KEY` for this method,
    which wins over a plain `KEY` (so `--set lr=1e-3 --set my-method.lr=2` serves a mixed run)."""
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


#: The JSON Schema keyword that marks a hyperparameter holding layer indices (an integer, or an
#: array of integers): `{"type": "integer", "x-layer": true}`. Such values are checked against the
#: model's number of layers at plan time, before the model loads.
LAYER_KEYWORD = "x-layer"


def layer_keys(schema: Mapping[str, Any]) -> list[str]:
    """The hyperparameters a method's schema marks as layer indices (`LAYER_KEYWORD`)."""
    properties = schema.get("properties", {})
    return sorted(
        key for key, prop in properties.items() if isinstance(prop, Mapping) and prop.get(LAYER_KEYWORD)
    )


def _layer_indices(value: Any) -> list[int]:
    items = value if isinstance(value, list) else [value]
    return [i for i in items if isinstance(i, int) and not isinstance(i, bool)]


def check_values(
    method: Method | type[Method],
    values: Mapping[str, Any],
    *,
    complete: bool,
    num_layers: int | None = None,
    model: str = "",
) -> None:
    """Refuse hyperparameter values that the method's JSON Schema (types, ranges, enums) or the
    model's depth rules out, with a HarnessError naming the method, the key, the value and the rule.

    `complete=False` checks values given before the model is known (`--set`, a suite's hparams):
    a key the schema requires is not missing yet, as `default_hparams(handle)` fills it later.
    `num_layers` (None when unknown) bounds every index of a property marked `"x-layer": true`:
    -num_layers <= i < num_layers, negative indices counting from the last layer, as the
    architecture adapter reads them.
    """
    schema = method.hparams_schema
    validator = jsonschema.Draft202012Validator(schema)
    errors = [
        e for e in validator.iter_errors(values) if complete or e.absolute_path or e.validator != "required"
    ]
    if errors:
        first = min(errors, key=lambda e: [str(p) for p in e.absolute_path])
        if first.absolute_path:
            key = str(first.absolute_path[0])
            where = f"hyperparameter {key}={json.dumps(values[key])}"
        else:
            where = "hyperparameters"
        raise HarnessError(f"method {method.name!r}: {where}: {first.message}")
    if num_layers is None:
        return
    for key in layer_keys(schema):
        bad = [i for i in _layer_indices(values.get(key)) if not -num_layers <= i < num_layers]
        if bad:
            raise HarnessError(
                f"method {method.name!r}: hyperparameter {key}={json.dumps(values[key])}: layer {bad[0]} "
                f"is out of range: model {model!r} has {num_layers} layers (0..{num_layers - 1})"
            )


def resolve_hparams(
    method: Method, handle: ModelHandle | None, overrides: Mapping[str, Any]
) -> dict[str, Any]:
    """The hyperparameters a method runs with, in increasing precedence: the schema's `default`
    values, then `method.default_hparams(handle)` (model-dependent), then `overrides` (a suite's
    hparams under `--hparams` under `--set`). Unknown keys, values the schema refuses and layer
    indices beyond the model are errors that name the method and the key, raised before any edit."""
    check_names(method, overrides)
    values = schema_defaults(method.hparams_schema)
    if handle is not None:
        values.update(method.default_hparams(handle))
    values.update(overrides)
    num_layers = handle.adapter.num_layers if handle is not None else None
    model = handle.name if handle is not None else ""
    check_values(method, values, complete=True, num_layers=num_layers, model=model)
    return values
