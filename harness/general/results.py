"""Reading one figure per requested task out of lm-eval's result dictionary, with the provenance
needed to compare a "before" with an "after" (the same task version, shots and documents)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from harness.ground import HarnessError


@dataclass(frozen=True)
class GeneralResult:
    """The headline metric of one lm-eval task or group on one model state.

    `metric` is the task's first metric ("acc", "exact_match", ...) and `filter` the lm-eval
    filter it was read under ("none" for most multiple-choice tasks). `n_docs` is the number of
    documents actually evaluated, summed over a group's tasks, so a `limit` shows in it.
    """

    task: str
    metric: str
    value: float
    filter: str
    n_docs: int
    n_shot: int | None
    limit: int | None
    task_version: str | None
    lmeval_version: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GeneralResult:
        return cls(**data)


def headline(entry: Mapping[str, Any]) -> tuple[str, str, float] | None:
    """(metric, filter, value) of the first numeric "metric,filter" key, lm-eval keeping the
    order of the task's metric list."""
    for key, value in entry.items():
        if "," not in key or "_stderr," in key or not isinstance(value, int | float):
            continue
        metric, filter_name = key.split(",", 1)
        return metric, filter_name, float(value)
    return None


def _leaves(name: str, group_subtasks: Mapping[str, list[str]]) -> list[str]:
    children = group_subtasks.get(name)
    if not children:
        return [name]
    return [leaf for child in children for leaf in _leaves(child, group_subtasks)]


def read_results(
    output: Mapping[str, Any], tasks: list[str], *, limit: int | None, lmeval_version: str
) -> dict[str, GeneralResult]:
    """The figure of each requested name in `output` (what `lm_eval.evaluator.evaluate` returns)."""
    group_subtasks = output.get("group_subtasks", {})
    found: dict[str, GeneralResult] = {}
    for name in tasks:
        picked = headline(output["results"].get(name, {}))
        if picked is None:
            raise HarnessError(
                f"lm-eval task {name!r} reported no numeric metric: a group needs an "
                "aggregate_metric_list in its YAML, or name its tasks one by one"
            )
        metric, filter_name, value = picked
        leaves = _leaves(name, group_subtasks)
        shots = {output["n-shot"].get(leaf) for leaf in leaves}
        version = output["versions"].get(name)
        found[name] = GeneralResult(
            task=name,
            metric=metric,
            value=value,
            filter=filter_name,
            n_docs=sum(int(output["n-samples"][leaf]["effective"]) for leaf in leaves),
            n_shot=shots.pop() if len(shots) == 1 else None,
            limit=limit,
            task_version=None if version is None else str(version),
            lmeval_version=lmeval_version,
        )
    return found
