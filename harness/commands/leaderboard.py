"""`harness leaderboard`: merge the summaries of run directories into one table."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import click

from harness.commands import Choice
from harness.ground import HarnessError
from harness.runs.leaderboard import FORMATS, LAYOUTS

if TYPE_CHECKING:
    from harness.ground import MetricInfo
    from harness.plugins import Registry


def registered_info(registry: Registry, name: str) -> MetricInfo | None:
    """The metadata of an installed metric, or None when no usable plugin registers `name`."""
    if name not in registry.metrics:
        return None
    try:
        return registry.metrics.load(name).info
    except HarnessError:  # a broken or doubly registered metric: nothing reliable to say
        return None


def load_summary(run_dir: str | os.PathLike[str], registry: Registry | None = None) -> dict[str, Any]:
    """A run's summary with every metric's metadata: as the run recorded it, else (a summary written
    before runs recorded it) from the installed plugin that registers the metric. A metric that
    neither describes is shown as a fraction, with a warning on stderr."""
    from harness.plugins import get_registry
    from harness.runs import leaderboard

    registry = registry if registry is not None else get_registry()
    summary = leaderboard.complete_metric_info(
        leaderboard.load_summary(run_dir), lambda name: registered_info(registry, name)
    )
    unknown = [n for n in leaderboard.metric_names(summary) if n not in summary["metric_info"]]
    if unknown:
        click.echo(
            f"warning: {run_dir}: no unit recorded or installed for metric(s) {', '.join(unknown)}; "
            "shown as fractions (x100)",
            err=True,
        )
    return summary


@click.command("leaderboard")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--format", "fmt", type=Choice(FORMATS), default="text", show_default=True)
@click.option(
    "--layout",
    type=Choice(LAYOUTS),
    default="wide",
    show_default=True,
    help="wide: a row per result, a column per metric; knowedit: the paper's rows of task x metric; "
    "cross-domain: the study's train task x evaluated task table of cross-domain runs.",
)
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write to a file instead of stdout.")
def command(run_dirs: tuple[str, ...], fmt: str, layout: str, output: str | None) -> None:
    """Merge runs into one table; fractions x100 as in the KnowEdit tables, other units as they are."""
    from harness.plugins import get_registry
    from harness.runs.leaderboard import merge, metric_names, render, run_facts

    summaries = [load_summary(d) for d in run_dirs]
    registry = get_registry()
    names = {name for summary in summaries for name in metric_names(summary)}
    descriptions = {
        name: registry.metrics.get(name).description for name in names if name in registry.metrics
    }
    runs = [run_facts(summary) for summary in summaries]
    text = render(merge(summaries), fmt, layout, runs=runs, descriptions=descriptions)
    if output:
        with open(output, "w", encoding="utf-8") as f:
            f.write(text if text.endswith("\n") else text + "\n")
    else:
        click.echo(text)
