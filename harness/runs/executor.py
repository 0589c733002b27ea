"""Running scheduled jobs locally: per model one load, per job its steps applied, scored and written.

Everything that can refuse a run has been refused by the plan (`build_plan`, `schedule`); this
module only executes. Resuming is part of the loop: a job whose rows are all in cases.jsonl is
skipped without loading anything, and inside a job a step whose rows all exist is not scored
again. Undo modes skip such a step outright; sequential mode applies it again (same seed, so the
same edit) to rebuild the model state that the remaining cases are edited on.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from tqdm import tqdm

from harness.ground import AppliedEdit, Metric, MetricInfo
from harness.runs import modes
from harness.runs.catalog import Catalog
from harness.runs.general import GeneralCheck
from harness.runs.modes import Step, Tagged
from harness.runs.plan import Job, RunConfig, task_metrics
from harness.runs.schedule import JobSchedule, Warn, warn_stderr
from harness.runs.store import RowKey, RunStore
from harness.seeding import case_seed, seed_everything

#: Share of a job's edits that may leave its edit-success metrics (`MetricInfo.edit_success`) no
#: better than on the unedited model before we warn.
STUCK_SHARE = 0.5


def _finite(scores: Mapping[str, float]) -> dict[str, float]:
    return {k: v for k, v in scores.items() if math.isfinite(v)}


def _gained(info: MetricInfo, before: float, after: float) -> bool:
    """Whether a score moved the better way, or (a fraction where higher is better) reached 1."""
    if info.higher_is_better:
        return after > before or (info.is_fraction and after >= 1.0)
    return after < before


def _edit_success(
    metrics: Sequence[Metric], pre: Mapping[str, float], post: Mapping[str, float]
) -> list[Metric]:
    """The metrics that say whether the edit took (`MetricInfo.edit_success`) and scored the case
    before and after it."""
    return [m for m in metrics if m.info.edit_success and m.name in pre and m.name in post]


def _no_gain(judged: Sequence[Metric], pre: Mapping[str, float], post: Mapping[str, float]) -> bool:
    """Whether an edit left every one of these metrics no better than on the unedited model."""
    return not any(_gained(m.info, pre[m.name], post[m.name]) for m in judged)


class Executor:
    def __init__(
        self,
        config: RunConfig,
        schedules: Sequence[JobSchedule],
        store: RunStore,
        catalog: Catalog,
        *,
        device: str = "auto",
        progress: bool = True,
        warn: Warn = warn_stderr,
        general: GeneralCheck | None = None,
    ) -> None:
        self.config = config
        self.schedules = list(schedules)
        self.store = store
        self.catalog = catalog
        self.device = device
        self.progress = progress
        self.warn = warn
        self.general = general

    def run(self) -> None:
        done = self.store.done()
        for s in self.schedules:
            self.store.record_job(s.job, n_cases=len(s.ordered))
        pending = [s for s in self.schedules if not s.row_keys() <= done or self.general_due(s.job)]
        for model in dict.fromkeys(s.job.model for s in pending):
            handle = self._load_model(model)
            evaluators = _Evaluators(handle, self.catalog, self.config, self.store)
            for s in pending:
                if s.job.model == model:
                    _JobRun(self, handle, evaluators, s, done).run()

    def general_due(self, job: Job) -> bool:
        """Whether the job still lacks the general check that the run asks for."""
        return self.general is not None and job.key not in self.store.general_records()

    def _load_model(self, model: str) -> Any:
        from harness.models import load_model

        started = time.perf_counter()
        handle = load_model(model, device=self.device, alias=self.catalog.registry.models.locate(model))
        self.store.record_model(model, handle, load_s=time.perf_counter() - started)
        return handle


class _Evaluators:
    """One evaluator per task on one loaded model, made on first use (its settings go to the
    manifest)."""

    def __init__(self, handle: Any, catalog: Catalog, config: RunConfig, store: RunStore) -> None:
        self.handle = handle
        self.catalog = catalog
        self.config = config
        self.store = store
        self._by_task: dict[str, Any] = {}

    def __call__(self, task: str) -> Any:
        if task not in self._by_task:
            from harness.evaluation.evaluator import Evaluator
            from harness.evaluation.options import EvalOptions

            names = task_metrics(self.catalog, self.config, task)
            metrics = [self.catalog.registry.metrics.load(name) for name in names]
            options = EvalOptions(alias_policy=self.config.alias_policy, seed=self.config.seed)
            self._by_task[task] = Evaluator(self.handle, metrics, options=options)
            self.store.record_evaluation(task, self._by_task[task].settings())
        return self._by_task[task]


class _JobRun:
    """One job on a loaded model: fit (cross-domain), then the steps, then the general check."""

    def __init__(
        self, x: Executor, handle: Any, evaluators: _Evaluators, schedule: JobSchedule, done: set[RowKey]
    ) -> None:
        self.x = x
        self.handle = handle
        self.evaluators = evaluators
        self.s = schedule
        self.job = schedule.job
        self.done = done
        self.method = x.catalog.method(self.job.method)
        self.hparams: Mapping[str, Any] = {}
        self.pre: dict[tuple[str, str], dict[str, float]] = {}
        self.active: list[AppliedEdit] = []
        self.no_gain: list[bool] = []
        #: The edit-success metrics that the job's scores came from, named in the warning.
        self.judged: dict[str, None] = {}

    def run(self) -> None:
        from harness.hparams import resolve_hparams

        self.hparams = resolve_hparams(self.method, self.handle, self.job.overrides)
        self.x.store.record_job_started(self.job, self.hparams)
        self._score_pre()
        general_before = self.x.general.before(self.handle) if self.x.general_due(self.job) else None
        if self.job.train_task:
            seed_everything(case_seed(self.x.config.seed, f"fit:{self.job.train_task}"))
            self.method.fit(self.handle, self.s.train, self.hparams)
        try:
            self._steps()
            if general_before is not None:
                self._general(general_before)
        finally:
            while self.active:
                self.active.pop().undo()
        self.x.store.record_job_finished(self.job)
        stuck = sum(self.no_gain)
        if self.no_gain and stuck > STUCK_SHARE * len(self.no_gain):
            self.x.warn(
                f"{self.job.key}: {stuck} of {len(self.no_gain)} edits did not improve "
                f"{', '.join(self.judged)} over the unedited model; the method may be mis-configured for "
                f"this model (check its layers and learning rate with --set KEY=VALUE, see `harness list "
                f"methods`)"
            )

    def _steps(self) -> None:
        """The job loop: apply each step's chunk, score what it asks for that is not yet in
        cases.jsonl, and (undo modes) take the edit back."""
        bar = tqdm(
            total=len(self.s.ordered),
            desc=f"{self.job.method} {self.job.task_label} {self.job.mode}",
            unit="case",
            file=sys.stderr,
            disable=not self.x.progress,
            dynamic_ncols=True,
        )
        with bar:
            for step in self.s.steps:
                todo = self._unscored(step)
                if todo or not self.job.undoes:  # sequential replays a finished step's edit
                    with self._applied(step.chunk) as apply_s:
                        context = "".join(a.context for a in self.active)
                        for protocol, tagged in todo:
                            self._score(protocol, tagged, context, step.edits, apply_s)
                bar.update(len(step.chunk))

    def _unscored(self, step: Step) -> list[tuple[str, list[Tagged]]]:
        todo = [
            (protocol, [t for t in tagged if self.s.row_key(t, protocol) not in self.done])
            for protocol, tagged in step.score
        ]
        return [(protocol, tagged) for protocol, tagged in todo if tagged]

    def _apply(self, chunk: Sequence[Tagged]) -> float:
        """Edit the chunk's cases (seeded by its first case) onto the model; seconds taken."""
        seed_everything(case_seed(self.x.config.seed, chunk[0].case.case_id))
        started = time.perf_counter()
        self.active.append(self.method.apply(self.handle, [t.case for t in chunk], self.hparams))
        return time.perf_counter() - started

    @contextlib.contextmanager
    def _applied(self, chunk: Sequence[Tagged]) -> Iterator[float]:
        """The chunk's edit in place for the body, then undone in the undo modes."""
        apply_s = self._apply(chunk)
        try:
            yield apply_s
        finally:
            if self.job.undoes:
                self.active.pop().undo()

    def _score_pre(self) -> None:
        for task, cases in self.s.cases.items():
            evaluator = self.evaluators(task)
            evaluator.prepare(cases)
            for case, scores in zip(cases, evaluator.evaluate_pre(cases), strict=True):
                self.pre[(task, case.case_id)] = _finite(scores)

    def _score(
        self, protocol: str, tagged: Sequence[Tagged], context: str, edits: int, apply_s: float
    ) -> None:
        for task in dict.fromkeys(t.task for t in tagged):
            group = [t for t in tagged if t.task == task]
            started = time.perf_counter()
            contexts = {t.case.case_id: context for t in group} if context else None
            post = self.evaluators(task).evaluate([t.case for t in group], contexts=contexts)
            eval_s = (time.perf_counter() - started) / len(group)
            for t, scores in zip(group, post, strict=True):
                self._write(t, protocol, _finite(scores), edits, {"apply_s": apply_s, "eval_s": eval_s})

    def _write(self, t: Tagged, protocol: str, post: dict[str, float], edits: int, timing: dict) -> None:
        pre = self.pre[t.key]
        self.x.store.append(
            {
                "case_id": t.case.case_id,
                "job": self.job.key,
                "model": self.job.model,
                "method": self.job.method,
                "task": t.task,
                "mode": self.job.mode,
                "protocol": protocol,
                "edits": edits,
                "pre": pre,
                "post": post,
                "timing": {k: round(v, 4) for k, v in timing.items()},
            }
        )
        judged = _edit_success(self.evaluators(t.task).metrics, pre, post)
        if protocol == modes.IMMEDIATE and judged:
            self.no_gain.append(_no_gain(judged, pre, post))
            self.judged.update(dict.fromkeys(m.name for m in judged))

    def _general(self, before: dict[str, Any]) -> None:
        """The general-capability check after the job's edits: in sequential mode on the model after
        its last edit; in the undo modes on `--general-edits` cases edited one after another."""
        if self.job.undoes:
            for tagged in self.s.ordered[: self.x.config.general_edits]:
                self._apply([tagged])
        edits = len(self.active) if self.job.undoes else len(self.s.ordered)
        self.x.store.record_general(self.job, self.x.general.after(self.handle, before, edits))
