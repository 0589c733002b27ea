"""`harness analyze RUN_DIR`: the study's analyses of a finished run, written to `--out` (default
RUN_DIR/analysis) as report.html (figures embedded, nothing fetched), report.json (the numbers)
and figures/NAME.png and .svg.

The command reaches the CLI through this package's `harness_register_commands` hook; torch and
matplotlib are imported only when it runs. See docs/analyze.md for what each section shows.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from harness.api import HarnessError

#: Where a MQuAKE file is looked for under a data folder when --mquake is not given.
MQUAKE_FOLDER = Path("other") / "mquake"


def find_mquake(record: Any) -> Path | None:
    """A MQuAKE JSON file for knowledge locating: under $HARNESS_DATA_DIR/other/mquake, else beside
    the run's --data-dir (its parent's other/mquake, the layout of the project's shared data)."""
    roots = []
    if os.environ.get("HARNESS_DATA_DIR"):
        roots.append(Path(os.environ["HARNESS_DATA_DIR"]))
    data_dir = record.manifest.get("config", {}).get("data_dir")
    if data_dir:
        roots += [Path(data_dir), Path(data_dir).parent]
    for root in roots:
        found = sorted((root / MQUAKE_FOLDER).glob("MQuAKE*.json"))
        if found:
            return found[0]
    return None


def trace_triples(
    handle: Any, mquake: Path, count: int, samples: int, say: Callable[[str], None]
) -> list[dict]:
    """Causal traces of the first `count` fact triples of a MQuAKE file: per triple, role ("fact",
    "related", "unrelated") -> Trace; the first fact traced at every token, for its heatmap."""
    from harness_plugins.analysis.facts import read_triples
    from harness_plugins.analysis.tracing import causal_trace

    traces = []
    for i, triple in enumerate(read_triples(mquake, count)):
        say(f"tracing fact triple {i + 1}: {triple.fact.prompt!r}")
        roles = {"fact": triple.fact, "related": triple.related, "unrelated": triple.unrelated}
        traces.append(
            {
                role: causal_trace(
                    handle, fact.prompt, fact.subject, every_token=i == 0 and role == "fact", samples=samples
                )
                for role, fact in roles.items()
            }
        )
    return traces


def analyze(
    record: Any,
    load: Callable[[str], Any],
    out: Path,
    *,
    cases: int | None = None,
    case_study: int = 3,
    mquake: Path | None = None,
    triples: int = 3,
    samples: int = 10,
    trend_summaries: Sequence[Mapping[str, Any]] = (),
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Write the report of `record` (an `open_run` result) into `out`; `load(model_name)` gives a
    model handle; `trend_summaries` are other runs' summaries whose sequential results join the
    trends. Returns the numbers written to report.json."""
    from harness_plugins.analysis import report
    from harness_plugins.analysis.page import build_page
    from harness_plugins.analysis.replay import replay

    if record.summary is None:
        raise HarnessError(f"{record.root} has no summary.json yet (a run still going?): nothing to analyse")
    summary = record.summary
    folder = out / "figures"
    models = list(dict.fromkeys(job.model for job in record.jobs))
    if not models:
        raise HarnessError(f"{record.root}: no job of the run started, so there is nothing to analyse")
    replayed, traces = [], []
    for model in models:
        handle = load(model)
        jobs = [job for job in record.jobs if job.model == model]
        replayed += list(
            replay(record, jobs, handle, cases=cases, progress=lambda s: say(f"re-applying {s}"))
        )
        if model == models[0] and mquake is not None:
            traces = trace_triples(handle, mquake, triples, samples, say)
    failed = report.failed_edits(record.rows, report.edit_success_metrics(summary))
    numbers: dict[str, Any] = {
        "run": str(record.root),
        "models": models,
        "edits_replayed": len(replayed),
        "taxonomy": report.taxonomy_numbers(replayed, failed),
        "weights": report.weight_numbers(replayed),
        "vocabulary": report.vocabulary_numbers(replayed),
        "locating": report.locating_numbers(traces),
        "trends": report.trend_numbers([summary, *trend_summaries]),
        "radar": report.radar_numbers(summary),
    }
    numbers["case_study"] = report.case_study(replayed, case_study)
    page = build_page(numbers, traces, folder, mquake)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(numbers, indent=2, ensure_ascii=False, default=str) + "\n")
    (out / "report.html").write_text(page.html(), encoding="utf-8")
    return numbers


def _summary(run_dir: str) -> Mapping[str, Any]:
    """The summary.json of another run, for its trends."""
    from harness.api import read_json

    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        raise HarnessError(
            f"--trends-from {run_dir}: no summary.json (is it a run directory? a run still going?)"
        )
    return read_json(path)


@click.command("analyze")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--out", type=click.Path(file_okay=False), default=None, help="Report folder [default: RUN_DIR/analysis]."
)
@click.option(
    "--cases", type=click.IntRange(min=1), default=None, help="Edits applied again per job [default: all]."
)
@click.option(
    "--case-study", default=3, show_default=True, type=click.IntRange(min=0), help="Cases shown side by side."
)
@click.option(
    "--mquake",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="MQuAKE file for knowledge locating [default: under $HARNESS_DATA_DIR or beside the run's data].",
)
@click.option(
    "--triples", default=3, show_default=True, type=click.IntRange(min=0), help="Fact triples traced."
)
@click.option(
    "--samples", default=10, show_default=True, type=click.IntRange(min=1), help="Noise samples per trace."
)
@click.option(
    "--trends-from",
    multiple=True,
    type=click.Path(exists=True, file_okay=False),
    help="Another run (repeatable) whose sequential after-N results join the trends.",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
def command(
    run_dir: str,
    out: str | None,
    cases: int | None,
    case_study: int,
    mquake: str | None,
    triples: int,
    samples: int,
    trends_from: tuple[str, ...],
    device: str,
) -> None:
    """The KnowEdit study's analyses of a run: error taxonomy, case study, weight change, vocabulary
    space, knowledge locating and trends, as an HTML report with figures and a JSON of numbers."""
    from harness.api import load_model, open_run

    record = open_run(run_dir)
    folder = Path(out) if out else Path(run_dir) / "analysis"
    facts = Path(mquake) if mquake else find_mquake(record)
    analyze(
        record,
        lambda model: load_model(model, device=device),
        folder,
        cases=cases,
        case_study=case_study,
        mquake=facts,
        triples=triples,
        samples=samples,
        trend_summaries=[_summary(other) for other in trends_from],
        say=lambda text: click.echo(text, err=True),
    )
    click.echo(f"report: {folder / 'report.html'}")
