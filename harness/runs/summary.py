"""summary.json from cases.jsonl: the mean of each metric over the cases it applies to.

The summary is always recomputed from the rows (never accumulated in memory), so a resumed run's
summary is exactly that of an uninterrupted one. A metric absent from every row of a group stays
absent: "does not apply" is never reported as 0.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

#: The metric each cross-domain matrix is drawn for, when the rows have it.
MATRIX_METRICS = ("edit_succ", "generalization", "portability", "locality")


def mean_scores(score_dicts: Iterable[Mapping[str, float]]) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for scores in score_dicts:
        for key, value in scores.items():
            totals[key] += value
            counts[key] += 1
    return {key: totals[key] / counts[key] for key in sorted(totals)}


def _protocol_order(protocol: str) -> tuple[int, int]:
    if protocol == "immediate":
        return (0, 0)
    return (1, int(protocol.rsplit("-", 1)[-1]))


def summarize(
    rows: Iterable[Mapping[str, Any]],
    jobs: Sequence[Mapping[str, Any]],
    general: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """One result per job, task and protocol, in plan order; `jobs` are the manifest's job records."""
    groups: dict[tuple[str, str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(row["job"], row["task"], row["protocol"])].append(row)
    results = []
    for job in jobs:
        keys = sorted(
            (k for k in groups if k[0] == job["key"]),
            key=lambda k: (job["tasks"].index(k[1]), _protocol_order(k[2])),
        )
        for key in keys:
            members = groups[key]
            result: dict[str, Any] = {
                "method": job["method"],
                "task": key[1],
                "mode": job["mode"],
                "model": job["model"],
                "n_cases": len({r["case_id"] for r in members}),
                "metrics": mean_scores(r["post"] for r in members),
                "pre_metrics": mean_scores(r["pre"] for r in members),
                "job": job["key"],
            }
            if job["mode"] == "sequential":
                result["protocol"] = key[2]
            if job["batch_size"] > 1:
                result["batch_size"] = job["batch_size"]
            if job.get("train_task"):
                result["train_task"] = job["train_task"]
            if len(job["tasks"]) > 1:
                result["mix"] = list(job["tasks"])
            if general and job["key"] in general:
                result["general"] = dict(general[job["key"]])
            results.append(result)
    summary: dict[str, Any] = {"results": results}
    matrices = cross_domain_matrices(results)
    if matrices:
        summary["cross_domain"] = matrices
    return summary


def cross_domain_matrices(results: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per model, method and metric: rows = train task (source), columns = evaluated task."""
    cells: dict[tuple[str, str], dict[tuple[str, str], Mapping[str, float]]] = defaultdict(dict)
    for r in results:
        if "train_task" in r:
            cells[(r["model"], r["method"])][(r["train_task"], r["task"])] = r["metrics"]
    matrices = []
    for (model, method), grid in cells.items():
        sources = list(dict.fromkeys(s for s, _ in grid))
        targets = list(dict.fromkeys(t for _, t in grid))
        for metric in MATRIX_METRICS:
            if not any(metric in m for m in grid.values()):
                continue
            values = [[grid.get((s, t), {}).get(metric) for t in targets] for s in sources]
            matrices.append(
                {
                    "model": model,
                    "method": method,
                    "metric": metric,
                    "sources": sources,
                    "targets": targets,
                    "values": values,
                }
            )
    return matrices
