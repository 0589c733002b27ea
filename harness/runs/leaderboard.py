"""Leaderboards: the results of one or more runs merged into one table, in five formats.

Scores are shown x100 as in the KnowEdit tables; quantities that are not fractions (fluency in
bits, perplexity, ConvSent's KL locality) are shown as they are. The JSON format keeps the raw
fractions, for machines. A metric that does not apply to a row leaves its cell empty.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.api import HarnessError
from harness.schemas import format_issues, read_json, validate_document

FORMATS = ("text", "markdown", "latex", "html", "json")
#: Columns first in this order (the KnowEdit table's), then every other metric alphabetically.
LEADING_METRICS = ("edit_succ", "generalization", "portability", "locality", "fluency")
KEY_COLUMNS = ("model", "method", "task", "mode", "n")
_TABLEFMT = {"text": "simple", "markdown": "github", "latex": "latex_booktabs"}


def is_fraction(metric: str) -> bool:
    """Whether a metric key is a score in [0, 1] (shown x100)."""
    base = metric.split(".", 1)[0]
    return base not in ("fluency", "perplexity") and not base.endswith("_kl")


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
    """One row per result of every run: key columns, raw metric values, general figures."""
    rows = []
    for summary in summaries:
        for result in summary["results"]:
            row: dict[str, Any] = {
                "model": result["model"],
                "method": result["method"],
                "task": result["task"],
                "mode": _mode_label(result),
                "n": result["n_cases"],
                "metrics": dict(result["metrics"]),
            }
            for name, figures in result.get("general", {}).items():
                row["metrics"][f"general:{name}"] = figures["after"]
                row["metrics"][f"general:{name}:before"] = figures["before"]
            rows.append(row)
    return rows


def metric_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    present = {key for row in rows for key in row["metrics"]}
    leading = [m for m in LEADING_METRICS if m in present]
    return leading + sorted(present - set(leading))


def _cell(metric: str, value: float | None) -> str:
    if value is None:
        return ""
    shown = value * 100 if is_fraction(metric) else value
    return f"{shown:.2f}"


def table(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Headers and string cells, scores x100."""
    metrics = metric_columns(rows)
    body = [
        [str(row[c]) for c in KEY_COLUMNS] + [_cell(m, row["metrics"].get(m)) for m in metrics]
        for row in rows
    ]
    return [*KEY_COLUMNS, *metrics], body


def render(rows: Sequence[Mapping[str, Any]], fmt: str) -> str:
    if fmt not in FORMATS:
        raise HarnessError(f"unknown leaderboard format {fmt!r}; known: {', '.join(FORMATS)}")
    if fmt == "json":
        return json.dumps(list(rows), indent=2, sort_keys=True)
    headers, body = table(rows)
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
        "<p>Scores x100 (fluency in bits, perplexity and KL as they are). Click a column to sort.</p>\n"
        f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}\n</tbody>\n</table>\n"
        f"<script>{_SORT_SCRIPT}</script>\n</body>\n</html>\n"
    )
