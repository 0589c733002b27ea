"""The evaluator for tests: metrics named by their registered names as well as given as classes.

A run loads a task's metrics by name from its registry and hands the classes to the evaluator,
which knows no plugin. A test usually has no registry at hand, so this evaluator looks names up in
the installed plugins (`get_registry().metrics`) and is otherwise the run's evaluator.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from harness.evaluation.evaluator import Evaluator as RunEvaluator
from harness.evaluation.evaluator import MetricSpec
from harness.evaluation.options import EvalOptions
from harness.plugins import get_registry


class Evaluator(RunEvaluator):
    """`Evaluator(handle, ["edit_succ", MyMetric], options)`: the run's evaluator, names loaded
    (and checked to be metrics) from the installed plugins; an unknown name is a HarnessError
    listing the known ones."""

    def __init__(
        self, handle: Any, metrics: Sequence[MetricSpec | str], options: EvalOptions | None = None
    ) -> None:
        registered = get_registry().metrics
        super().__init__(handle, [registered.load(m) if isinstance(m, str) else m for m in metrics], options)
