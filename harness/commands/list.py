"""`harness list`: what is installed, who provides it, and what is broken; and, given a NAME,
everything about one component.

Exits 1 when a name is registered twice (nobody can use it until one plugin is disabled), and with
`--check` when a registered target does not load: each problem is named on stderr.

`harness list methods NAME [--model M]` shows a method's description, capabilities, tuning hint
and every hyperparameter with its default for the model (the default model unless `--model` names
one). Defaults that depend on the model come from `Method.default_hparams` called on a weightless
skeleton of the model, built from its config alone (`harness.models.shape.weightless_handle`);
where that cannot be built or the method needs more than the architecture, the table says the
default depends on the model, and why. `tasks NAME` shows a task's record format, splits and
default metrics, `metrics NAME` what a metric's numbers mean and its options; the plain listing
can import nothing heavy, these views import the component (and torch for methods).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import click
from tabulate import tabulate

from harness.commands import Choice
from harness.plugins import KINDS, CheckFailure, Component, Registry, get_registry

WHAT = ["plugins", *KINDS]


def _component_rows(registry: Registry, kind: str) -> list[dict[str, Any]]:
    rows = []
    for name in registry.names(kind):
        if name in registry.conflicts[kind]:
            rows.append({"name": name, "error": registry.conflicts[kind][name]})
            continue
        comp = registry.components[kind][name]
        row = {
            "name": name,
            "distribution": comp.plugin.distribution,
            "version": comp.plugin.version,
            "description": comp.description,
        }
        row.update({k: v for k, v in comp.info.items() if isinstance(v, (str, int, float, bool))})
        if kind == "models":
            row["available"] = _model_available(comp)
        rows.append(row)
    return rows


def _model_available(comp: Component) -> bool:
    check = comp.info.get("available")
    if callable(check):
        try:
            return bool(check())
        except Exception:  # an availability probe that breaks means "not available", not a crash
            return False
    return True


def _plugin_rows(registry: Registry, failures: list[CheckFailure] | None) -> list[dict[str, Any]]:
    rows = []
    for p in sorted(registry.plugins.values(), key=lambda p: p.name):
        row = {
            "name": p.name,
            "distribution": p.distribution,
            "version": p.version,
            "status": p.status,
            "hooks": ", ".join(p.hooks),
            "error": p.error,
            "warning": "; ".join(p.warnings),
        }
        if failures is not None:
            failed = sum(f.plugin == p.name for f in failures)
            row["check"] = f"{failed} failed" if failed else "ok" if p.status != "disabled" else ""
        rows.append(row)
    return rows


def _schema_type(prop: Mapping[str, Any]) -> str:
    """A JSON Schema property's type in words: `number`, `integer or null`, `array of integer`."""
    kinds = prop.get("type", "any")
    text = " or ".join(kinds) if isinstance(kinds, list) else str(kinds)
    items = prop.get("items")
    if text == "array" and isinstance(items, Mapping) and "type" in items:
        text += f" of {_schema_type(items)}"
    if "enum" in prop:
        text = " | ".join(json.dumps(v) for v in prop["enum"])
    return text


def _model_defaults(method: Any, registry: Registry, model: str) -> tuple[dict[str, Any], str]:
    """The method's model-dependent defaults for `model`, read from a weightless skeleton of it,
    and a note on the model they were read from (or, when they could not be, why not)."""
    from harness.ground import HarnessError
    from harness.models.shape import weightless_handle

    unknown = "model-dependent defaults unknown"
    try:
        alias = registry.models.locate(model)
        handle = weightless_handle(alias[0] if alias else model, model)
    except HarnessError as exc:
        return {}, f"{unknown}: {exc}"
    if handle is None:
        return {}, f"{unknown}: its config is not readable here (not downloaded yet?)"
    shape = f"{handle.adapter.family} family, {handle.adapter.num_layers} layers"
    try:
        return dict(method().default_hparams(handle)), shape
    except Exception as exc:  # a method that reads more than the architecture: say so, honestly
        return {}, f"{shape}; {unknown}, they need the loaded model ({type(exc).__name__}: {exc})"


def method_detail(registry: Registry, name: str, model: str | None) -> dict[str, Any]:
    """Everything `harness list methods NAME` shows, as JSON-ready data."""
    from harness.hparams import schema_defaults

    component = registry.methods.get(name)
    method = registry.methods.load(name)
    model = model or registry.models.default()
    by_model, model_note = _model_defaults(method, registry, model)
    schema = method.hparams_schema
    fixed = schema_defaults(schema)
    required = set(schema.get("required", ()))
    hparams = []
    for key, prop in schema.get("properties", {}).items():
        if key in by_model:
            default, source = by_model[key], "model"
        elif key in fixed:
            default, source = fixed[key], "schema"
        else:
            default, source = None, "depends on the model" if key in required else "none"
        hparams.append(
            {
                "name": key,
                "type": _schema_type(prop),
                "default": default,
                "default_from": source,
                "description": prop.get("description", ""),
            }
        )
    caps = method.capabilities
    return {
        "kind": "method",
        "name": name,
        "description": component.description,
        "origin": component.origin,
        "capabilities": {
            "batch": caps.batch,
            "sequential": caps.sequential,
            "needs_training": caps.needs_training,
            "edits_weights": caps.edits_weights,
        },
        "tuning_hint": method.tuning_hint,
        "model": model,
        "model_note": model_note,
        "hyperparameters": hparams,
    }


def task_detail(registry: Registry, name: str) -> dict[str, Any]:
    """Everything `harness list tasks NAME` shows."""
    component = registry.tasks.get(name)
    task = registry.tasks.load(name)
    return {
        "kind": "task",
        "name": name,
        "description": component.description,
        "origin": component.origin,
        "record_format": task.record_format,
        "splits": list(task.splits),
        "metrics": list(task.metrics),
        "reads_field_mapped_specs": component.info.get("field_mapping") is True,
    }


def metric_detail(registry: Registry, name: str) -> dict[str, Any]:
    """Everything `harness list metrics NAME` shows."""
    component = registry.metrics.get(name)
    metric = registry.metrics.load(name)
    info = metric.info
    return {
        "kind": "metric",
        "name": name,
        "description": component.description,
        "origin": component.origin,
        "unit": info.unit,
        "shown": "x100 in tables" if info.is_fraction else "as it is",
        "higher_is_better": info.higher_is_better,
        "headline": info.headline,
        "edit_success": info.edit_success,
        "options": dict(metric.option_defaults),
    }


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def render_detail(detail: Mapping[str, Any]) -> str:
    """A component's detail as text: a heading, its facts, and (methods) the hyperparameter table."""
    lines = [f"{detail['kind']} {detail['name']}: {detail['description']}", f"from {detail['origin']}"]
    if detail["kind"] == "method":
        caps = detail["capabilities"]
        lines.append(
            f"capabilities: batch {_yes(caps['batch'])}, sequential {_yes(caps['sequential'])}, "
            f"needs training {_yes(caps['needs_training'])}, edits weights {_yes(caps['edits_weights'])}"
        )
        if detail["tuning_hint"]:
            lines.append(f"to tune when edits do not take: {detail['tuning_hint']}")
        table = [
            [h["name"], h["type"], json.dumps(h["default"]), h["default_from"], h["description"]]
            for h in detail["hyperparameters"]
        ]
        if not table:
            lines.append("hyperparameters: none")
        else:
            headers = ["name", "type", "default", "default from", "description"]
            lines.append(f"\nhyperparameters, defaults for {detail['model']} ({detail['model_note']}):")
            lines.append(tabulate(table, headers=headers, disable_numparse=True))
            lines.append(f"\nset one with --set {detail['name']}.KEY=VALUE")
    elif detail["kind"] == "task":
        lines += [
            f"record format: {detail['record_format']} (`harness validate FILE --task {detail['name']}`)",
            f"splits: {', '.join(detail['splits'])}",
            f"default metrics: {', '.join(detail['metrics']) or 'none'}",
        ]
        if detail["reads_field_mapped_specs"]:
            lines.append("reads dataset specs that map their own fields")
    else:
        direction = "higher is better" if detail["higher_is_better"] else "lower is better"
        lines.append(f"unit: {detail['unit']} (shown {detail['shown']}), {direction}")
        headline = detail["headline"]
        lines.append(f"headline place: {headline}" if headline is not None else "not a headline metric")
        if detail["edit_success"]:
            lines.append("says whether an edit took (the no-effect warning reads it)")
        options = ", ".join(f"{k}={json.dumps(v)}" for k, v in detail["options"].items())
        lines.append(f"options: {options or 'none'}")
    return "\n".join(lines)


def _detail(registry: Registry, what: str, name: str, model: str | None) -> dict[str, Any]:
    """The detail of one component; for a kind without a detail view, its listing row."""
    if what == "methods":
        return method_detail(registry, name, model)
    if what == "tasks":
        return task_detail(registry, name)
    if what == "metrics":
        return metric_detail(registry, name)
    registry.get(what, name)  # an unknown name: refused, with the closest one
    return next(row for row in _component_rows(registry, what) if row["name"] == name)


@click.command("list")
@click.argument("what", type=Choice(WHAT), default="plugins", required=False)
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "--check", is_flag=True, help="Import every registered target now and exit 1 naming each that fails."
)
@click.option(
    "--model", help="With `methods NAME`: the model whose defaults are shown; default: the default model."
)
@click.pass_context
def command(
    ctx: click.Context, what: str, name: str | None, as_json: bool, check: bool, model: str | None
) -> None:
    """List installed plugins, or the methods, tasks, metrics, models, suites or commands they
    register; with a NAME, everything about one of them (a method's hyperparameters and their
    defaults for --model, a task's format and metrics, a metric's unit and direction)."""
    registry = get_registry()
    if model is not None and (what != "methods" or name is None):
        raise click.UsageError("--model goes with a method: harness list methods NAME --model MODEL")
    if name is not None:
        if what == "plugins":
            raise click.UsageError("NAME goes with a kind: harness list methods NAME")
        detail = _detail(registry, what, name, model)
        if as_json:
            click.echo(json.dumps(detail, indent=2))
        elif "kind" in detail:
            click.echo(render_detail(detail))
        else:
            click.echo("\n".join(f"{key}: {value}" for key, value in detail.items()))
        return
    failures = registry.check() if check else None
    rows = _plugin_rows(registry, failures) if what == "plugins" else _component_rows(registry, what)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    elif not rows:
        click.echo(f"no {what} registered")
    else:
        columns = list(dict.fromkeys(key for row in rows for key in row))
        for optional in ("error", "warning"):
            if what == "plugins" and not any(r[optional] for r in rows):
                columns.remove(optional)
        table = [[row.get(c, "") for c in columns] for row in rows]
        click.echo(tabulate(table, headers=columns, disable_numparse=True))
    problems = registry.conflict_messages() + [f.message for f in failures or ()]
    for message in problems:
        click.echo(f"harness: error: {message}", err=True)
    if failures is not None and not failures:
        click.echo("harness: every registered target loads", err=True)
    if problems:
        ctx.exit(1)
