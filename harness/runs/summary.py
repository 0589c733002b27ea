"""summary.json from cases.jsonl: the mean of each metric over the cases it applies to.

The summary is always recomputed from the rows (never accumulated in memory), so a resumed run's
summary is exactly that of an uninterrupted one. A metric absent from every row of a group stays
absent: "does not apply" is never reported as 0.

The summary also records what each metric's numbers mean (`metric_info`: unit, direction, headline
place, edit success, from the metric's `MetricInfo`), so that a leaderboard made from it later
needs neither the metric's plugin nor a list of metric names.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from harness.ground import MetricInfo

if TYPE_CHECKING:
    from harness.runs.plan import Job


def info_of(key: str, metric_info: Mapping[str, MetricInfo]) -> MetricInfo:
    """What the numbers of a metric key mean: a sub-score `name.group` takes `name`'s metadata; a
    name without metadata (a summary written before metrics declared it, an lm-eval figure) is a
    fraction where higher is better, the default `MetricInfo`."""
    return metric_info.get(key.split(".", 1)[0], MetricInfo())


def headline_metrics(metric_info: Mapping[str, MetricInfo]) -> list[str]:
    """Every metric with a headline place, in headline order (ties by name)."""
    places = {name: i.headline for name, i in metric_info.items() if i.headline is not None}
    return sorted(places, key=lambda name: (places[name], name))


def headline_scores(metric_info: Mapping[str, MetricInfo]) -> list[str]:
    """The headline metrics that are fractions (the KnowEdit table's scores), in headline order:
    the paper-shaped leaderboard leads with them."""
    return [name for name in headline_metrics(metric_info) if metric_info[name].is_fraction]


def read_metric_info(summary: Mapping[str, Any]) -> dict[str, MetricInfo]:
    """The metric metadata a summary records (none for a summary written before it did)."""
    return {name: MetricInfo.from_json(data) for name, data in summary.get("metric_info", {}).items()}


def mean_scores(score_dicts: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """The mean of each key over the dicts that have it. The sums are exact (`math.fsum`), so the
    means do not depend on the order of the rows: a run whose rows were written in another order
    (Ray shards, a resume) gets the same summary to the last bit."""
    values: dict[str, list[float]] = defaultdict(list)
    for scores in score_dicts:
        for key, value in scores.items():
            values[key].append(value)
    return {key: math.fsum(values[key]) / len(values[key]) for key in sorted(values)}


def _protocol_order(protocol: str) -> tuple[int, int]:
    if protocol == "immediate":
        return (0, 0)
    return (1, int(protocol.rsplit("-", 1)[-1]))


def summarize(
    rows: Iterable[Mapping[str, Any]],
    jobs: Sequence[Job],
    general: Mapping[str, Mapping[str, Any]] | None = None,
    metric_info: Mapping[str, MetricInfo] | None = None,
) -> dict[str, Any]:
    """One result per job, task and protocol, in plan order (`jobs`: the run's planned jobs).
    `metric_info`: every metric of the run by name; recorded, and it names the headline scores
    that cross-domain matrices are drawn for."""
    groups: dict[tuple[str, str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(row["job"], row["task"], row["protocol"])].append(row)
    results = []
    for job in jobs:
        keys = sorted(
            (k for k in groups if k[0] == job.key),
            key=lambda k: (job.tasks.index(k[1]), _protocol_order(k[2])),
        )
        for key in keys:
            members = groups[key]
            result: dict[str, Any] = {
                "method": job.method,
                "task": key[1],
                "mode": job.mode,
                "model": job.model,
                "n_cases": len({r["case_id"] for r in members}),
                "metrics": mean_scores(r["post"] for r in members),
                "pre_metrics": mean_scores(r["pre"] for r in members),
                "job": job.key,
            }
            if job.mode == "sequential":
                result["protocol"] = key[2]
            if job.batch_size > 1:
                result["batch_size"] = job.batch_size
            if job.train_task:
                result["train_task"] = job.train_task
            if len(job.tasks) > 1:
                result["mix"] = list(job.tasks)
            if general and job.key in general:
                result["general"] = dict(general[job.key])
            results.append(result)
    summary: dict[str, Any] = {"results": results}
    metric_info = metric_info or {}
    matrices = cross_domain_matrices(results, headline_metrics(metric_info))
    if matrices:
        summary["cross_domain"] = matrices
    if metric_info:
        summary["metric_info"] = {name: info.to_json() for name, info in sorted(metric_info.items())}
    return summary


def cross_domain_matrices(
    results: Sequence[Mapping[str, Any]], metrics: Sequence[str]
) -> list[dict[str, Any]]:
    """Per model, method and one of `metrics` that the results have: rows = train task (source),
    columns = evaluated task. `summarize` draws them for every headline metric, fluency included, as
    the study's cross-domain table has."""
    cells: dict[tuple[str, str], dict[tuple[str, str], Mapping[str, float]]] = defaultdict(dict)
    for r in results:
        if "train_task" in r:
            cells[(r["model"], r["method"])][(r["train_task"], r["task"])] = r["metrics"]
    matrices = []
    for (model, method), grid in cells.items():
        sources = list(dict.fromkeys(s for s, _ in grid))
        targets = list(dict.fromkeys(t for _, t in grid))
        for metric in metrics:
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
