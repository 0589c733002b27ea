"""`harness list`: what is installed, who provides it, and what is broken.

Exits 1 when a name is registered twice (nobody can use it until one plugin is disabled), and with
`--check` when a registered target does not load: each problem is named on stderr.
"""

from __future__ import annotations

import json
from typing import Any

import click
from tabulate import tabulate

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


@click.command("list")
@click.argument("what", type=click.Choice(WHAT), default="plugins", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "--check", is_flag=True, help="Import every registered target now and exit 1 naming each that fails."
)
@click.pass_context
def command(ctx: click.Context, what: str, as_json: bool, check: bool) -> None:
    """List installed plugins, or the methods, tasks, metrics, models, suites or commands they
    register."""
    registry = get_registry()
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
