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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.ground import HarnessError, MetricInfo
from harness.runs.summary import headline_metrics, headline_scores, info_of, read_metric_info
from harness.schemas import format_issues, read_json, validate_document

FORMATS = ("text", "markdown", "latex", "html", "json")
LAYOUTS = ("wide", "knowedit")
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
    path = Path(run_dir) / "summary.json" if Path(run_dir).is_dir() else Path(run_dir)
    if not path.exists():
        raise HarnessError(f"{run_dir}: no summary.json (is it a run directory? a run still going?)")
    data = read_json(path)
    issues = validate_document(data, "results", str(path))
    if issues:
        raise HarnessError(f"invalid summary:\n{format_issues(issues)}")
    return data


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
    """One row per result of every run: key columns, raw metric values, general figures, and the
    metadata of the row's metrics as its run recorded it (`metric_info`)."""
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


def render(rows: Sequence[Mapping[str, Any]], fmt: str, layout: str = "wide") -> str:
    if fmt not in FORMATS:
        raise HarnessError(f"unknown leaderboard format {fmt!r}; known: {', '.join(FORMATS)}")
    if layout not in LAYOUTS:
        raise HarnessError(f"unknown leaderboard layout {layout!r}; known: {', '.join(LAYOUTS)}")
    if fmt == "json":
        return json.dumps(list(rows), indent=2, sort_keys=True)
    headers, body = knowedit_table(rows) if layout == "knowedit" else table(rows)
    if fmt == "html":
        return _html(headers, body)
    from tabulate import tabulate

    return tabulate(body, headers=headers, tablefmt=_TABLEFMT[fmt], disable_numparse=True)


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

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; }
table { border-collapse: collapse; }
th, td { padding: 0.3em 0.7em; border-bottom: 1px solid #ddd; text-align: right; }
th { cursor: pointer; background: #f4f4f4; user-select: none; }
th[data-order="asc"]::after { content: " \\25B2"; }
th[data-order="desc"]::after { content: " \\25BC"; }
td:nth-child(-n+4), th:nth-child(-n+4) { text-align: left; }
"""


def _html(headers: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    """A self-contained page (inline style and script, nothing fetched): click a header to sort."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    rows = "\n".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        "<title>knowedit-harness leaderboard</title>\n"
        f"<style>{_STYLE}</style>\n</head>\n<body>\n<h1>Leaderboard</h1>\n"
        "<p>Fractions x100; other units (bits, nats, perplexity, ...) as they are. "
        "Click a column to sort.</p>\n"
        f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}\n</tbody>\n</table>\n"
        f"<script>{_SORT_SCRIPT}</script>\n</body>\n</html>\n"
    )
