"""`harness leaderboard`: merge the summaries of run directories into one table."""

from __future__ import annotations

import click

from harness.runs.leaderboard import FORMATS, LAYOUTS


@click.command("leaderboard")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True)
@click.option(
    "--layout",
    type=click.Choice(LAYOUTS),
    default="wide",
    show_default=True,
    help="wide: a row per result, a column per metric; knowedit: the paper's rows of task x metric.",
)
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write to a file instead of stdout.")
def command(run_dirs: tuple[str, ...], fmt: str, layout: str, output: str | None) -> None:
    """Merge runs into one table; scores x100 as in the KnowEdit tables (fluency as it is)."""
    from harness.runs.leaderboard import load_summary, merge, render

    text = render(merge([load_summary(d) for d in run_dirs]), fmt, layout)
    if output:
        with open(output, "w", encoding="utf-8") as f:
            f.write(text if text.endswith("\n") else text + "\n")
    else:
        click.echo(text)
