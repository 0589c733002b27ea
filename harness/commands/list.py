"""`harness list`: what is installed, who provides it, and which plugins failed."""

from __future__ import annotations

import json

import click
from tabulate import tabulate

from harness.plugins import KINDS, get_registry

WHAT = ["plugins", *KINDS]


def _component_rows(kind: str) -> list[dict]:
    registry = get_registry()
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


def _model_available(comp) -> bool:
    check = comp.info.get("available")
    if callable(check):
        try:
            return bool(check())
        except Exception:
            return False
    return True


def _plugin_rows() -> list[dict]:
    return [
        {
            "name": p.name,
            "distribution": p.distribution,
            "version": p.version,
            "status": p.status,
            "hooks": ", ".join(p.hooks),
            "error": p.error,
        }
        for p in sorted(get_registry().plugins.values(), key=lambda p: p.name)
    ]


@click.command("list")
@click.argument("what", type=click.Choice(WHAT), default="plugins", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def command(what: str, as_json: bool) -> None:
    """List installed plugins, or the methods, tasks, metrics, models or suites they register."""
    rows = _plugin_rows() if what == "plugins" else _component_rows(what)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no {what} registered")
        return
    columns = list(dict.fromkeys(key for row in rows for key in row))
    if what == "plugins" and not any(r["error"] for r in rows):
        columns.remove("error")
    table = [[row.get(c, "") for c in columns] for row in rows]
    click.echo(tabulate(table, headers=columns, disable_numparse=True))
