"""The report's numbers (`report.json`) from what `replay` and `tracing` found and from the run's
rows and summary, and the page (`report.html`) that shows them with the figures.

Every number here is a plain aggregate that the page's prose defines; means are over the edits
(or facts) of a method that have the quantity, and a method without any is left out of a figure
rather than drawn as 0.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from statistics import fmean
from typing import Any

from harness_plugins.analysis import taxonomy
from harness_plugins.analysis.replay import Replayed
from harness_plugins.analysis.tracing import Trace, rsim

#: Protocol of the rows scored after each case's own edit (every mode has them).
IMMEDIATE = "immediate"
#: (method, task, case id): an edit of a single-mode job.
EditKey = tuple[str, str, str]


def edit_success_metrics(summary: Mapping[str, Any]) -> list[str]:
    """The metrics the run's summary says measure edit success (`MetricInfo.edit_success`)."""
    return [name for name, info in summary.get("metric_info", {}).items() if info.get("edit_success")]


def failed_edits(rows: Iterable[Mapping[str, Any]], metrics: Sequence[str]) -> dict[EditKey, bool]:
    """(method, task, case id) -> whether the run's single-mode edit failed: an edit-success metric
    of its row below 1 (the target not fully produced). Rows without such a metric are left out."""
    failed = {}
    for row in rows:
        if row["mode"] != "single" or row["protocol"] != IMMEDIATE:
            continue
        scores = [row["post"][m] for m in metrics if m in row["post"]]
        if scores:
            failed[(row["method"], row["task"], row["case_id"])] = min(scores) < 1.0
    return failed


def taxonomy_numbers(replayed: Sequence[Replayed], failed: Mapping[EditKey, bool]) -> dict[str, Any]:
    """Per method: edits, failed edits, how many of each kind, and each failed edit's generation and
    kind (a failed edit whose target has no word, which the rules cannot compare, is left out)."""
    per_method: dict[str, dict[str, Any]] = {}
    for r in replayed:
        entry = per_method.setdefault(r.method, {"edits": 0, "failed": 0, "kinds": {}, "cases": []})
        entry["edits"] += 1
        if not failed.get((r.method, r.task, r.case.case_id)):
            continue
        if not taxonomy.words(r.case.target_new):  # nothing the rules can compare (a symbol)
            continue
        kind = taxonomy.classify(r.generation, r.case.target_new)
        entry["failed"] += 1
        entry["kinds"][kind] = entry["kinds"].get(kind, 0) + 1
        entry["cases"].append({"case_id": r.case.case_id, "generation": r.generation, "kind": kind})
    return per_method


def kind_shares(numbers: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Method -> kind -> share of its failed edits, for methods with a failed edit."""
    return {
        method: {kind: n / entry["failed"] for kind, n in entry["kinds"].items()}
        for method, entry in numbers.items()
        if entry["failed"]
    }


def weight_numbers(replayed: Sequence[Replayed]) -> dict[str, dict[str, Any]]:
    """Per method that changed weights, per layer (mean over its edits): ‖ΔW‖_F, ‖ΔW‖_F/‖W‖_F,
    the top-1% column share, and the column profile of the heatmap."""
    grouped: dict[str, dict[int, list]] = {}
    for r in replayed:
        for change in r.layers:
            if change.layer is not None:
                grouped.setdefault(r.method, {}).setdefault(change.layer, []).append(change)
    numbers = {}
    for method, layers in grouped.items():
        numbers[method] = {
            layer: {
                "edits": len(found),
                "norm": fmean(c.norm for c in found),
                "relative": fmean(c.relative for c in found),
                "top_share": fmean(c.top_share for c in found),
                "profile": [fmean(bins) for bins in zip(*(c.profile for c in found), strict=True)],
            }
            for layer, found in sorted(layers.items())
        }
    return numbers


def vocabulary_numbers(replayed: Sequence[Replayed]) -> dict[str, dict[str, Any]]:
    """Per method with a residual-writing ΔW: the share of edits with Hit@k before and after, and
    the top tokens of the top column of its first edit."""
    numbers: dict[str, dict[str, Any]] = {}
    for r in replayed:
        if not r.hits:
            continue
        entry = numbers.setdefault(r.method, {"edits": 0, "hits": {}, "example": None})
        entry["edits"] += 1
        for key, hit in r.hits.items():
            entry["hits"][key] = entry["hits"].get(key, 0) + int(hit)
        if entry["example"] is None:
            case = r.case
            entry["example"] = {"case_id": case.case_id, "target": case.target_new, "columns": r.column_words}
    for entry in numbers.values():
        entry["hits"] = {key: n / entry["edits"] for key, n in entry["hits"].items()}
    return numbers


def locating_numbers(traces: Sequence[Mapping[str, Trace]]) -> dict[str, Any]:
    """RSim at every k from 1 to the layer count, mean over the triples, of the fact with its
    related fact and with its unrelated fact; and each trace's answer and probabilities."""
    if not traces:
        return {}
    layers = len(traces[0]["fact"].by_layer)
    ks = list(range(1, layers + 1))
    return {
        "k": ks,
        "related": [fmean(rsim(t["fact"], t["related"], k) for t in traces) for k in ks],
        "unrelated": [fmean(rsim(t["fact"], t["unrelated"], k) for t in traces) for k in ks],
        "traces": [
            {
                role: {
                    "prompt": trace.prompt,
                    "answer": trace.answer,
                    "clean": trace.clean,
                    "corrupted": trace.corrupted,
                    "by_layer": trace.by_layer.tolist(),
                }
                for role, trace in t.items()
            }
            for t in traces
        ],
    }


def case_study(replayed: Sequence[Replayed], count: int) -> list[dict[str, Any]]:
    """The first `count` cases that every replayed method edited: prompt, target, old answer (the
    first ground truth) and each method's generation."""
    methods = list(dict.fromkeys(r.method for r in replayed))
    by_case: dict[tuple[str, str], dict[str, Replayed]] = {}
    for r in replayed:
        by_case.setdefault((r.task, r.case.case_id), {})[r.method] = r
    chosen = [edits for edits in by_case.values() if len(edits) == len(methods)][:count]
    return [
        {
            "task": edits[methods[0]].task,
            "case_id": edits[methods[0]].case.case_id,
            "prompt": edits[methods[0]].case.prompt,
            "target": edits[methods[0]].case.target_new,
            "old": next(iter(edits[methods[0]].case.ground_truth), ""),
            "generations": {m: edits[m].generation for m in methods},
        }
        for edits in chosen
    ]


def _after_n(protocol: str) -> int | None:
    match = re.fullmatch(r"after-(\d+)", protocol or "")
    return int(match.group(1)) if match else None


def headline(summary: Mapping[str, Any]) -> list[str]:
    """The summary's headline metrics in their place's order."""
    info = summary.get("metric_info", {})
    placed = [(i["headline"], name) for name, i in info.items() if i.get("headline") is not None]
    return [name for _, name in sorted(placed)]


def trend_numbers(summaries: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """Metric -> "method/task" -> [(N, value)] from the sequential `after-N` results of the
    summaries, for each headline metric they have."""
    panels: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for summary in summaries:
        for result in summary.get("results", []):
            n = _after_n(result.get("protocol", ""))
            for metric in headline(summary) if n is not None else ():
                if metric in result["metrics"]:
                    label = f"{result['method']}/{result['task']}"
                    panels.setdefault(metric, {}).setdefault(label, []).append((n, result["metrics"][metric]))
    for methods in panels.values():
        for points in methods.values():
            points.sort()
    return panels


def radar_numbers(summary: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Method -> headline metric -> value on [0, 1], mean over the method's single-mode (or
    `immediate`) results: fractions as they are; another unit divided by the largest value any
    method has, inverted where lower is better (smallest best = 1)."""
    info = summary.get("metric_info", {})
    raw: dict[str, dict[str, list[float]]] = {}
    for result in summary.get("results", []):
        if result.get("protocol", IMMEDIATE) != IMMEDIATE:
            continue
        for metric in headline(summary):
            if metric in result["metrics"]:
                raw.setdefault(result["method"], {}).setdefault(metric, []).append(result["metrics"][metric])
    means = {m: {k: fmean(v) for k, v in metrics.items()} for m, metrics in raw.items()}
    values: dict[str, dict[str, float]] = {m: {} for m in means}
    for metric in headline(summary):
        present = {m: v[metric] for m, v in means.items() if metric in v}
        if not present:
            continue
        if info[metric].get("unit", "fraction") == "fraction":
            scaled = present
        elif info[metric].get("higher_is_better", True):
            top = max(present.values()) or 1.0
            scaled = {m: v / top for m, v in present.items()}
        else:
            low = min(present.values())
            scaled = {m: (low / v if v else 1.0) for m, v in present.items()}
        for method, value in scaled.items():
            values[method][metric] = value
    return values


# -- the page ---------------------------------------------------------------------------------


def figure_html(png: Path, caption: str) -> str:
    """A figure element embedding the PNG (base64), captioned, naming its PNG and SVG files."""
    data = base64.b64encode(png.read_bytes()).decode()
    return (
        f'<figure id="fig-{png.stem}"><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(caption)} (<code>{png.stem}.png</code>, <code>{png.stem}.svg</code>)"
        "</figcaption></figure>\n"
    )


def highlight(text: str, target: str, old: str) -> str:
    """`text` escaped, with the target marked `<mark class="target">` and the old answer
    `<mark class="old">` wherever they occur as whole words (case-insensitive: "male" is not marked
    inside "female")."""
    spans = []
    for needle, css in ((target, "target"), (old, "old")):
        if needle.strip():
            pattern = rf"(?<!\w){re.escape(needle.strip())}(?!\w)"
            spans += [(m.start(), m.end(), css) for m in re.finditer(pattern, text, re.I)]
    out, at = [], 0
    for start, end, css in sorted(spans):
        if start < at:
            continue
        out.append(html.escape(text[at:start]))
        out.append(f'<mark class="{css}">{html.escape(text[start:end])}</mark>')
        at = end
    out.append(html.escape(text[at:]))
    return "".join(out)


def table_html(headers: Sequence[str], rows: Iterable[Sequence[str]], css: str = "") -> str:
    """A table: headers as text, cells as HTML; `css` its class."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "\n".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    attribute = f' class="{css}"' if css else ""
    return f"<table{attribute}>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>\n"
