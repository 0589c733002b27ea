"""One module per `harness` subcommand, each exposing `command`; and what their options share."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from harness.plugins import did_you_mean

if TYPE_CHECKING:
    from harness.models.handle import ModelHandle
    from harness.runs.catalog import Catalog
    from harness.runs.record import RunRecord


class Choice(click.Choice):
    """click's choice of fixed values, whose refusal of a misspelt value names the closest one
    (`did_you_mean`), as every "unknown ..." message of the harness does."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter as exc:
            hint = did_you_mean(str(value), [str(c) for c in self.choices])
            self.fail(f"{exc.message.rstrip('.')}{hint}", param, ctx)


def load_named_model(spec: str, **options: Any) -> ModelHandle:
    """A model as `harness run --model` takes it: a registered alias (resolved through the installed
    plugins), a folder, a GGUF file or a Hugging Face id. `options` are those of
    `harness.models.load.load_model` (device, dtype, verify, ...). It is `harness.api.load_model`,
    for plugin subcommands, which live at this layer; a method is handed its model instead.

    Raises HarnessError for an unknown alias (with the closest names) or a model that cannot load.
    """
    from harness.models.load import load_model
    from harness.plugins import get_registry

    return load_model(spec, alias=get_registry().models.locate(spec), **options)


def installed_catalog() -> Catalog:
    """The plugins as `harness run` sees them (installed entry points), for the planner and
    executor. A module-level function, so that Ray workers can import it and build the same
    catalog in their own process (`RayOptions.catalog_factory`)."""
    from harness.plugins import get_registry
    from harness.runs.catalog import Catalog

    return Catalog(get_registry())


def open_run(run_dir: str | Path) -> RunRecord:
    """A run directory read back for analysis (`harness.runs.record.RunRecord`) over the installed
    plugins. It is `harness.api.open_run`, for plugin subcommands such as `harness analyze`.

    Raises HarnessError for a folder that is no run directory or whose data has moved."""
    from harness.runs.record import read_run

    return read_run(run_dir, installed_catalog())
