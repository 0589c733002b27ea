"""Leaderboards: the results of one or more runs merged into one table, in five formats and two
layouts.

Layouts: `wide` is one row per result with a column per metric (every sub-score included), for
sorting and for machines; `knowedit` is the shape of the KnowEdit paper's table, one row per task
and headline metric with a column per method, which fits a terminal and a paper.

What a metric's numbers mean comes from its metadata (`MetricInfo`), which each summary records
and each merged row carries (`metric_info`): fractions are shown x100 as in the KnowEdit tables,
every other unit (bits, nats, perplexity, rank, ...) as it is, and the headline places order the
columns. A summary from before metrics declared metadata is completed by the command layer from the
installed plugins (`complete_metric_info`); a name nobody describes counts as a fraction. The JSON
format keeps the raw values, for machines. A metric that does not apply to a row leaves its cell
empty.
"""

from __future__ import annotations

import html
import json
import os
import shlex
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from harness.ground import HarnessError, MetricInfo
from harness.runs.page import html_page
from harness.runs.summary import headline_metrics, headline_scores, info_of, read_metric_info
from harness.schemas import format_issues, read_json, validate_document

FORMATS = ("text", "markdown", "latex", "html", "json")
LAYOUTS = ("wide", "knowedit", "cross-domain")
KEY_COLUMNS = ("model", "method", "task", "mode", "n")
_TABLEFMT = {"text": "simple", "markdown": "github", "latex": "latex_booktabs"}


def metric_names(summary: Mapping[str, Any]) -> list[str]:
    """The metrics whose scores a summary holds, sub-scores (`name.group`) counted as `name`."""
    return sorted({key.split(".", 1)[0] for result in summary["results"] for key in result["metrics"]})


def complete_metric_info(
    summary: Mapping[str, Any], lookup: Callable[[str], MetricInfo | None]
) -> dict[str, Any]:
    """The summary with metadata for each of its metrics that it does not record, from `lookup`
    (the command layer asks the installed plugins); a name `lookup` returns None for stays without."""
    recorded = dict(summary.get("metric_info", {}))
    for name in metric_names(summary):
        if name not in recorded and (info := lookup(name)) is not None:
            recorded[name] = info.to_json()
    return {**summary, "metric_info": recorded}


def load_summary(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """A run's summary (`run_dir` is the run directory or its summary.json), with `source`: the run
    directory. A failed run is refused: its results stop at an error, not where the user stopped
    them; an interrupted run's results are marked partial by `merge`."""
    path = Path(run_dir) / "summary.json" if Path(run_dir).is_dir() else Path(run_dir)
    if not path.exists():
        raise HarnessError(f"{run_dir}: no summary.json (is it a run directory? a run still going?)")
    data = read_json(path)
    issues = validate_document(data, "results", str(path))
    if issues:
        raise HarnessError(f"invalid summary:\n{format_issues(issues)}")
    folder = path.parent
    if data.get("status") == "failed":
        raise HarnessError(
            f"{run_dir}: the run failed{_done(data)} ({data.get('error', 'see its manifest.json')}), "
            "so it has no results to rank; once the cause is fixed, `harness run --resume "
            f"{shlex.quote(str(folder))}` completes it"
        )
    return {**data, "source": str(folder)}


def _done(summary: Mapping[str, Any]) -> str:
    cases = summary.get("cases")
    return f" with {cases['saved']} of {cases['planned']} cases done" if cases else ""


def partial_notes(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per run whose rows are partial (`merge` marks them), naming it and how to finish it."""
    notes = []
    for partial in dict.fromkeys(json.dumps(r["partial"], sort_keys=True) for r in rows if "partial" in r):
        run = json.loads(partial)
        where, finish = "a run", ""
        if run.get("source"):
            where = f"the run in {run['source']}"
            finish = f"; `harness run --resume {shlex.quote(run['source'])}` completes it"
        notes.append(f"partial results: {where} was {run['status']}{_done(run)}{finish}")
    return notes


def _mode_label(result: Mapping[str, Any]) -> str:
    label = result["mode"]
    if "batch_size" in result:
        label += f" x{result['batch_size']}"
    if "protocol" in result:
        label += f" ({result['protocol']})"
    if "train_task" in result:
        label += f" from {result['train_task']}"
    if "mix" in result:
        label += " mixed"
    return label


def merge(summaries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per result of every run: key columns, raw metric values, general figures, the
    metadata of the row's metrics as its run recorded it (`metric_info`), and `partial` (the run's
    status, case counts and folder) for a row from a run that did not finish."""
    rows = []
    for summary in summaries:
        recorded = summary.get("metric_info", {})
        for result in summary["results"]:
            row: dict[str, Any] = {
                "model": result["model"],
                "method": result["method"],
                "task": result["task"],
                "mode": _mode_label(result),
                "n": result["n_cases"],
                "metrics": dict(result["metrics"]),
            }
            names = {key.split(".", 1)[0] for key in result["metrics"]}
            row["metric_info"] = {name: dict(recorded[name]) for name in sorted(names & set(recorded))}
            if "train_task" in result:
                row["train_task"] = result["train_task"]
                row["run"] = Path(summary.get("source", "")).name
            if summary.get("status", "finished") != "finished":
                row["partial"] = {k: summary[k] for k in ("status", "cases", "source") if k in summary}
            for name, figures in result.get("general", {}).items():
                row["metrics"][f"general:{name}"] = figures["after"]
                row["metrics"][f"general:{name}:before"] = figures["before"]
            rows.append(row)
    return rows


def _table_info(rows: Sequence[Mapping[str, Any]]) -> dict[str, MetricInfo]:
    """One metadata entry per metric for the order of columns, from the first row that has it."""
    merged: dict[str, MetricInfo] = {}
    for row in rows:
        for name, info in read_metric_info(row).items():
            merged.setdefault(name, info)
    return merged


def metric_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The headline metrics in their order, then every other key alphabetically."""
    present = {key for row in rows for key in row["metrics"]}
    leading = [m for m in headline_metrics(_table_info(rows)) if m in present]
    return leading + sorted(present - set(leading))


def _cell(value: float | None, info: MetricInfo) -> str:
    """A value as shown: fractions x100, other units as they are, nothing where it does not apply."""
    if value is None:
        return ""
    return f"{value * 100 if info.is_fraction else value:.2f}"


def table(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Headers and string cells, fractions x100."""
    metrics = metric_columns(rows)
    body = []
    for row in rows:
        info = read_metric_info(row)
        cells = [_cell(row["metrics"].get(m), info_of(m, info)) for m in metrics]
        body.append([str(row[c]) for c in KEY_COLUMNS] + cells)
    return [*KEY_COLUMNS, *metrics], body


def _column_labels(keys: Sequence[tuple[str, str, str]]) -> list[str]:
    """A label per (model, method, mode) column, naming only the parts that differ between columns."""
    shown = sorted({i for i in range(3) if len({k[i] for k in keys}) > 1} | {1})  # always the method
    return [" / ".join(k[i] for i in shown) for k in keys]


def knowedit_table(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Headers and cells in the KnowEdit paper's shape: a row per task and metric (sub-scores such
    as `locality.forgetfulness` stay in the wide layout), a column per model, method and mode; the
    task is named on its first row only. Rows as in the paper: the headline scores (fractions) in
    headline order, then every other metric alphabetically, then the headline metrics of other
    units (fluency, in bits) in headline order."""

    def column(row: Mapping[str, Any]) -> tuple[str, str, str]:
        return (row["model"], row["method"], row["mode"])

    keys = list(dict.fromkeys(column(r) for r in rows))
    cells: dict[tuple[str, str], dict[tuple[str, str, str], str]] = {}
    for row in rows:
        info = read_metric_info(row)
        for metric, value in row["metrics"].items():
            if "." not in metric:
                cells.setdefault((row["task"], metric), {})[column(row)] = _cell(value, info_of(metric, info))
    table_info = _table_info(rows)
    headline, scores = headline_metrics(table_info), headline_scores(table_info)
    body = []
    for task in dict.fromkeys(r["task"] for r in rows):
        present = {m for (t, m) in cells if t == task}
        ordered = [
            *(m for m in scores if m in present),
            *sorted(present - set(headline)),
            *(m for m in headline if m in present and m not in scores),
        ]
        for i, metric in enumerate(ordered):
            shown = [cells[(task, metric)].get(k, "") for k in keys]
            body.append([task if i == 0 else "", metric, *shown])
    return ["task", "metric", *_column_labels(keys)], body


def cross_domain_table(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Headers and cells of the KnowEdit study's cross-domain table: a row per method and train
    task (source), a column per evaluated task (target) and headline metric that task's cases
    have (edit success, portability, locality, fluency, ... as the metrics place themselves), from
    the results of cross-domain runs; the model is a column when the rows have several, the run
    directory when one method and train task come from several runs (an editor trained with other
    settings). Raises HarnessError when no row comes from a cross-domain run."""
    trained = [r for r in rows if "train_task" in r]
    if not trained:
        raise HarnessError(
            "the cross-domain layout needs results of a cross-domain run "
            "(harness run --mode cross-domain --train-task T ...); these runs have none"
        )
    info = _table_info(trained)
    targets = list(dict.fromkeys(r["task"] for r in trained))
    # a target's column group holds the metrics its cases have (WikiBio has no portability)
    columns = [
        (t, m)
        for t in targets
        for m in headline_metrics(info)
        if any(m in r["metrics"] for r in trained if r["task"] == t)
    ]
    with_model = len({r["model"] for r in trained}) > 1
    lines = list(dict.fromkeys((r["model"], r["method"], r["train_task"], r.get("run", "")) for r in trained))
    with_run = len({line[:3] for line in lines}) < len(lines)
    cells = {(r["model"], r["method"], r["train_task"], r.get("run", ""), r["task"]): r for r in trained}
    body = []
    for model, method, source, run in lines:
        line = [model] if with_model else []
        line += [method, source] + ([run] if with_run else [])
        for target, m in columns:
            row = cells.get((model, method, source, run, target))
            value = row["metrics"].get(m) if row else None
            line.append(_cell(value, info_of(m, read_metric_info(row) if row else info)))
        body.append(line)
    keys = [*(["model"] if with_model else []), "method", "train task", *(["run"] if with_run else [])]
    return [*keys, *(f"{t}: {m}" for t, m in columns)], body


def render(
    rows: Sequence[Mapping[str, Any]],
    fmt: str,
    layout: str = "wide",
    *,
    runs: Sequence[Mapping[str, Any]] = (),
    descriptions: Mapping[str, str] | None = None,
) -> str:
    """The merged rows as a table in `fmt`. The HTML page also describes the `runs` (`run_facts`)
    and explains each metric in a tooltip, from its registered description (`descriptions`, by
    metric name) and its metadata."""
    if fmt not in FORMATS:
        raise HarnessError(f"unknown leaderboard format {fmt!r}; known: {', '.join(FORMATS)}")
    if layout not in LAYOUTS:
        raise HarnessError(f"unknown leaderboard layout {layout!r}; known: {', '.join(LAYOUTS)}")
    if fmt == "json":
        return json.dumps(list(rows), indent=2, sort_keys=True)
    tables = {"knowedit": knowedit_table, "cross-domain": cross_domain_table, "wide": table}
    headers, body = tables[layout](rows)
    notes = partial_notes(rows)
    if fmt == "html":
        marks = _Marks(rows, layout, headers, body, descriptions or {})
        return _html(headers, body, notes, marks, runs)
    from tabulate import tabulate

    text = tabulate(body, headers=headers, tablefmt=_TABLEFMT[fmt], disable_numparse=True)
    comment = "% " if fmt == "latex" else ""
    return "\n".join([text, *(f"{comment}note: {note}" for note in notes)])


_SORT_SCRIPT = """
document.querySelectorAll("th").forEach((th, col) => th.addEventListener("click", () => {
  const body = th.closest("table").tBodies[0];
  const asc = th.dataset.order !== "asc";
  th.closest("tr").querySelectorAll("th").forEach(h => delete h.dataset.order);
  th.dataset.order = asc ? "asc" : "desc";
  const key = r => { const t = r.cells[col].textContent; const n = parseFloat(t);
                     return t === "" ? null : (isNaN(n) ? t : n); };
  const rows = Array.from(body.rows).sort((a, b) => {
    const x = key(a), y = key(b);
    if (x === null || y === null) return (x === null) - (y === null);
    return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
  });
  rows.forEach(r => body.appendChild(r));
}));
"""

#: The leaderboard's own rules on top of the shared page style (`harness.runs.page`): sortable headers.
_STYLE = """
th { cursor: pointer; user-select: none; }
th[data-order="asc"]::after { content: " \\25B2"; }
th[data-order="desc"]::after { content: " \\25BC"; }
"""


def run_facts(summary: Mapping[str, Any]) -> dict[str, Any]:
    """What a leaderboard page says of one run, from the manifest.json beside its summary (the
    summary's `source` folder): its folder, models, start and end, status, and the versions of the
    harness, Python, torch, transformers and the plugins' distributions. A run without a readable
    manifest is described by what its summary has."""
    source = summary.get("source", "")
    try:
        manifest = read_json(Path(source) / "manifest.json") if source else {}
    except (OSError, HarnessError):
        manifest = {}
    versions = manifest.get("versions", {})
    packages = versions.get("packages", {})
    plugins = {
        f"{p['distribution']} {p['version']}"
        for p in versions.get("plugins", {}).values()
        if p.get("distribution") not in (None, "knowedit-harness", "(direct)")
    }
    shown = {
        "harness": versions.get("harness"),
        "python": versions.get("python"),
        "torch": packages.get("torch"),
        "transformers": packages.get("transformers"),
    }
    return {
        "source": source,
        "models": sorted(manifest.get("models", {})) or sorted({r["model"] for r in summary["results"]}),
        "started": manifest.get("started", ""),
        "ended": manifest.get("ended", ""),
        "status": summary.get("status") or manifest.get("status") or "finished",
        "versions": {name: version for name, version in shown.items() if version},
        "plugins": sorted(plugins),
    }


def metric_tooltip(key: str, info: MetricInfo, descriptions: Mapping[str, str]) -> str:
    """What a metric column (or row) means, for its tooltip: the registered description, the unit
    as shown and the direction of improvement. `name.group` is a sub-score of `name`."""
    name, _, group = key.partition(".")
    if key.startswith("general:"):
        task = key.removeprefix("general:").removesuffix(":before")
        when = "the unedited model" if key.endswith(":before") else "the edited model"
        return f"lm-evaluation-harness task {task} on {when}"
    described = descriptions.get(name, "")
    parts = [f"{name}{f' ({group})' if group else ''}: {described}" if described else key]
    parts.append("a fraction, shown x100" if info.is_fraction else f"in {info.unit}")
    parts.append("higher is better" if info.higher_is_better else "lower is better")
    return "; ".join(parts)


def _best(cells: Sequence[str], higher: bool) -> set[int]:
    """The positions of the best of the shown values (ties all), when the values differ."""
    values = {i: float(c) for i, c in enumerate(cells) if c}
    if len(set(values.values())) < 2:  # one value, or all equal: nothing stands out
        return set()
    best = (max if higher else min)(values.values())
    return {i for i, v in values.items() if v == best}


class _Marks:
    """The HTML marks of a table: a tooltip per metric header (wide) or metric cell (knowedit),
    and the best value of each row (knowedit: a task's metric across the columns) or of each
    column within a task and mode (wide), by the metric's direction (`MetricInfo`)."""

    def __init__(
        self,
        rows: Sequence[Mapping[str, Any]],
        layout: str,
        headers: Sequence[str],
        body: Sequence[Sequence[str]],
        descriptions: Mapping[str, str],
    ) -> None:
        info = _table_info(rows)
        self.header_titles: dict[int, str] = {}
        self.cell_titles: dict[tuple[int, int], str] = {}
        self.best: set[tuple[int, int]] = set()

        def tip(key: str) -> str:
            return metric_tooltip(key, info_of(key, info), descriptions)

        def comparable(key: str) -> bool:
            return not key.endswith(":before")

        if layout == "cross-domain":
            for c, header in enumerate(headers):
                if ": " in header:
                    self.header_titles[c] = tip(header.split(": ", 1)[1])
            return
        if layout == "knowedit":
            for r, row in enumerate(body):
                metric = row[1]
                self.cell_titles[(r, 1)] = tip(metric)
                higher = info_of(metric, info).higher_is_better
                self.best |= {(r, 2 + c) for c in _best(row[2:], higher)}
            return
        first = len(KEY_COLUMNS)
        groups: dict[tuple[str, str], list[int]] = {}
        for r, row in enumerate(body):
            groups.setdefault((row[2], row[3]), []).append(r)
        for c, key in enumerate(headers[first:], start=first):
            self.header_titles[c] = tip(key)
            if not comparable(key):
                continue
            higher = info_of(key, info).higher_is_better
            for members in groups.values():
                shown = [body[r][c] for r in members]
                self.best |= {(members[i], c) for i in _best(shown, higher)}


def _when(iso: str) -> str:
    """`2026-11-30 21:12 UTC` for a manifest's ISO time, to the minute; "" stays ""."""
    try:
        return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M %Z").strip()
    except ValueError:
        return iso


def _runs_html(runs: Sequence[Mapping[str, Any]]) -> str:
    """The table of the runs a page merges: folder, models, dates, status, versions."""
    if not runs:
        return ""
    head = "".join(f"<th>{h}</th>" for h in ("run", "model", "started", "ended", "status", "versions"))
    lines = []
    for run in runs:
        status = run["status"]
        badge = f'<span class="badge {html.escape(status)}">{html.escape(status)}</span>'
        versions = ", ".join([*(f"{k} {v}" for k, v in run["versions"].items()), *run["plugins"]])
        cells = [run["source"], ", ".join(run["models"]), _when(run["started"]), _when(run["ended"])]
        lines.append(
            "<tr>"
            + "".join(f"<td>{html.escape(c)}</td>" for c in cells)
            + f"<td>{badge}</td><td>{html.escape(versions)}</td></tr>"
        )
    return (
        f'<h2>Runs</h2>\n<table class="runs">\n<thead><tr>{head}</tr></thead>\n<tbody>\n'
        + "\n".join(lines)
        + "\n</tbody>\n</table>\n<h2>Results</h2>\n"
    )


def _titled(tag: str, text: str, title: str | None, css: str = "") -> str:
    attributes = f' class="{css}"' if css else ""
    attributes += f' title="{html.escape(title)}"' if title else ""
    return f"<{tag}{attributes}>{html.escape(text)}</{tag}>"


def _html(
    headers: Sequence[str],
    body: Sequence[Sequence[str]],
    notes: Sequence[str],
    marks: _Marks,
    runs: Sequence[Mapping[str, Any]],
) -> str:
    """A self-contained page (inline style and script, nothing fetched): the runs it merges, then
    the table; hover a metric for what it means, the best value of a row is bold, click a header
    to sort. Each note (`partial_notes`) is a line with a "partial" badge above the table."""
    badges = "".join(f'<p><span class="badge">partial</span> {html.escape(n)}</p>\n' for n in notes)
    head = "".join(_titled("th", h, marks.header_titles.get(c)) for c, h in enumerate(headers))
    rows = "\n".join(
        "<tr>"
        + "".join(
            _titled("td", cell, marks.cell_titles.get((r, c)), "best" if (r, c) in marks.best else "")
            for c, cell in enumerate(row)
        )
        + "</tr>"
        for r, row in enumerate(body)
    )
    page = (
        f"<h1>Leaderboard</h1>\n{_runs_html(runs)}"
        "<p>Fractions x100; other units (bits, nats, perplexity, ...) as they are. The best value "
        "of each row (wide layout: of each column within a task and mode) is in bold; hover a "
        "metric for what it means; click a column to sort.</p>\n"
        f"{badges}<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}\n</tbody>\n</table>\n"
    )
    return html_page("knowedit-harness leaderboard", page, script=_SORT_SCRIPT, style=_STYLE)
