"""Running a plan locally: per model one load, per job its cases edited, scored and written.

Resuming is part of the loop, not an afterthought: before a job starts, the rows already in
cases.jsonl are known, a finished job is skipped without loading anything, and inside a job a
chunk whose rows all exist is not scored again. Undo modes skip such chunks outright; sequential
mode re-applies them (same seed per chunk, so the same edit) to rebuild the model state that the
remaining cases are edited on.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from harness.api import AppliedEdit, EditCase, HarnessError, Method
from harness.runs import modes
from harness.runs.catalog import Catalog
from harness.runs.general import GeneralCheck
from harness.runs.modes import Step, Tagged
from harness.runs.plan import Job, RunConfig
from harness.runs.provenance import now
from harness.runs.store import RowKey, RunStore
from harness.seeding import case_seed, seed_everything

#: Share of a job's edits that may leave edit_succ at or below the unedited model before we warn.
STUCK_SHARE = 0.5

Warn = Callable[[str], None]


def _warn_stderr(message: str) -> None:
    tqdm.write(f"warning: {message}", file=sys.stderr)


@dataclass
class JobCases:
    """The cases of one job, tagged with their task, in editing order."""

    ordered: list[Tagged]
    by_task: dict[str, list[EditCase]] = field(default_factory=dict)


class Executor:
    def __init__(
        self,
        config: RunConfig,
        jobs: Sequence[Job],
        store: RunStore,
        catalog: Catalog,
        *,
        manifest: dict[str, Any],
        device: str = "auto",
        progress: bool = True,
        warn: Warn = _warn_stderr,
        general: GeneralCheck | None = None,
    ) -> None:
        self.config = config
        self.jobs = list(jobs)
        self.store = store
        self.catalog = catalog
        self.manifest = manifest
        self.device = device
        self.progress = progress
        self.warn = warn
        self.general = general
        self._loaded: dict[tuple[str, str], tuple[EditCase, ...]] = {}

    # -- cases ------------------------------------------------------------------------------

    def load_split(self, task: str, split: str) -> tuple[EditCase, ...]:
        if (task, split) not in self._loaded:
            loaded = self.catalog.task(task).load(
                split=split, data_dir=self.config.data_dir, skip_invalid=self.config.skip_invalid
            )
            if loaded.skipped:
                self.warn(
                    f"task {task!r}: {len(loaded.skipped)} invalid records of {loaded.source} skipped "
                    f"(first: {loaded.skipped[0]}); run `harness validate {loaded.source} --task {task}`"
                )
            self._loaded[(task, split)] = loaded.cases
        return self._loaded[(task, split)]

    def job_cases(self, job: Job) -> JobCases:
        method = self.catalog.method(job.method)
        per_task = []
        by_task = {}
        for task in job.tasks:
            cases = self.editable(job, method, self.load_split(task, self.config.split)[: self.config.limit])
            by_task[task] = cases
            per_task.append([Tagged(task, c) for c in cases])
        ordered = modes.interleave(per_task, self.config.seed) if len(job.tasks) > 1 else per_task[0]
        return JobCases(ordered, by_task)

    def editable(self, job: Job, method: Method, cases: Sequence[EditCase]) -> list[EditCase]:
        """The cases the job's method can edit (`Method.check_case`), asked before any model loads:
        a case it cannot edit stops the run now, or with --skip-invalid is left out with a warning."""
        problems = {c.case_id: problem for c in cases if (problem := method.check_case(c))}
        if not problems:
            return list(cases)
        first = next(iter(problems.values()))
        count = f"{len(problems)} of {len(cases)} cases"
        if not self.config.skip_invalid:
            raise HarnessError(
                f"{job.key}: {job.method} cannot edit {count} (first: {first}); fix the data, leave "
                f"this method or task out, or pass --skip-invalid to skip such cases"
            )
        self.warn(f"{job.key}: {count} skipped that {job.method} cannot edit (first: {first})")
        return [c for c in cases if c.case_id not in problems]

    def job_steps(self, job: Job, cases: JobCases) -> list[Step]:
        return modes.steps(cases.ordered, job.batch_size, sequential=not job.undoes, eval_at=job.eval_at)

    @staticmethod
    def expected(job: Job, steps: Sequence[Step]) -> set[RowKey]:
        return {
            (job.key, t.task, t.case.case_id, protocol)
            for step in steps
            for protocol, tagged in step.score
            for t in tagged
        }

    # -- running ----------------------------------------------------------------------------

    def run(self) -> None:
        done = self.store.done()
        pending: dict[str, list[tuple[Job, JobCases, list[Step]]]] = {}
        for job in self.jobs:
            cases = self.job_cases(job)
            steps = self.job_steps(job, cases)
            self._record_job(job, n_cases=len(cases.ordered))
            if not self.expected(job, steps) <= done or self.general_missing(job):
                pending.setdefault(job.model, []).append((job, cases, steps))
        for model, work in pending.items():
            handle = self._load_model(model)
            evaluators: dict[str, Any] = {}
            for job, cases, steps in work:
                JobRunner(self, handle, evaluators, job, cases, steps, done).run()

    def general_missing(self, job: Job) -> bool:
        return self.general is not None and job.key not in self.manifest.get("general", {})

    def _record_job(self, job: Job, *, n_cases: int) -> None:
        record = self.manifest.setdefault("jobs", {}).setdefault(job.key, {})
        record.update(
            key=job.key,
            model=job.model,
            method=job.method,
            tasks=list(job.tasks),
            mode=job.mode,
            batch_size=job.batch_size,
            eval_at=list(job.eval_at),
            train_task=job.train_task,
            overrides=dict(job.overrides),
            n_cases=n_cases,
        )

    def _load_model(self, model: str) -> Any:
        from harness.models import load_model

        started = time.perf_counter()
        handle = load_model(model, device=self.device)
        self.manifest.setdefault("models", {})[model] = {
            "fingerprint": handle.fingerprint(),
            "source": handle.source,
            "device": str(handle.device),
            "dtype": str(handle.dtype).removeprefix("torch."),
            "family": handle.adapter.family,
            "load_s": round(time.perf_counter() - started, 3),
        }
        self.store.write_manifest(self.manifest)
        return handle

    def evaluator_for(self, handle: Any, evaluators: dict[str, Any], task: str) -> Any:
        if task not in evaluators:
            from harness.evaluation.evaluator import Evaluator
            from harness.evaluation.options import EvalOptions

            names = self.catalog.task(task).metrics
            metrics = [self.catalog.registry.load("metrics", name) for name in names]
            options = EvalOptions(alias_policy=self.config.alias_policy, seed=self.config.seed)
            evaluators[task] = Evaluator(handle, metrics, options=options)
            self.manifest.setdefault("evaluation", {})[task] = evaluators[task].settings()
        return evaluators[task]


def _finite(scores: Mapping[str, float]) -> dict[str, float]:
    return {k: v for k, v in scores.items() if math.isfinite(v)}


class JobRunner:
    """One job on a loaded model."""

    def __init__(
        self,
        executor: Executor,
        handle: Any,
        evaluators: dict[str, Any],
        job: Job,
        cases: JobCases,
        steps: list[Step],
        done: set[RowKey],
    ) -> None:
        self.x = executor
        self.handle = handle
        self.evaluators = evaluators
        self.job = job
        self.cases = cases
        self.steps = steps
        self.done = done
        self.method = executor.catalog.method(job.method)
        self.pre: dict[tuple[str, str], dict[str, float]] = {}
        self.stuck = 0
        self.scored = 0

    def run(self) -> None:
        from harness.hparams import resolve_hparams

        hparams = resolve_hparams(self.method, self.handle, self.job.overrides)
        record = self.x.manifest["jobs"][self.job.key]
        record["hparams"] = hparams
        record.setdefault("started", now())
        self.x.store.write_manifest(self.x.manifest)
        self._prepare()
        general_before = self.x.general.before(self.handle) if self._general_due() else None
        if self.job.train_task:
            train = self.x.load_split(self.job.train_task, "train")
            seed_everything(case_seed(self.x.config.seed, f"fit:{self.job.train_task}"))
            self.method.fit(self.handle, train, hparams)
        active: list[AppliedEdit] = []
        try:
            self._edit_loop(hparams, active)
            if general_before is not None:
                self._general(hparams, active, general_before)
        finally:
            while active:
                active.pop().undo()
        record["finished"] = now()
        self.x.store.write_manifest(self.x.manifest)
        if self.scored and self.stuck > STUCK_SHARE * self.scored:
            self.x.warn(
                f"{self.job.key}: {self.stuck} of {self.scored} edits did not raise edit_succ above the "
                f"unedited model's; the method may be mis-configured for this model (check its layers "
                f"and learning rate with --set KEY=VALUE, see `harness list methods`)"
            )

    def _prepare(self) -> None:
        for task, cases in self.cases.by_task.items():
            evaluator = self.x.evaluator_for(self.handle, self.evaluators, task)
            evaluator.prepare(cases)
            for case, scores in zip(cases, evaluator.evaluate_pre(cases), strict=True):
                self.pre[(task, case.case_id)] = _finite(scores)

    def _apply(self, chunk: Sequence[Tagged], hparams: Mapping[str, Any]) -> tuple[AppliedEdit, float]:
        seed_everything(case_seed(self.x.config.seed, chunk[0].case.case_id))
        started = time.perf_counter()
        applied = self.method.apply(self.handle, [t.case for t in chunk], hparams)
        return applied, time.perf_counter() - started

    def _edit_loop(self, hparams: Mapping[str, Any], active: list[AppliedEdit]) -> None:
        """Edits stay in `active` until the caller undoes them (all of them, in sequential mode)."""
        total = len(self.cases.ordered)
        bar = tqdm(
            total=total,
            desc=f"{self.job.method} {self.job.task_label} {self.job.mode}",
            unit="case",
            file=sys.stderr,
            disable=not self.x.progress,
            dynamic_ncols=True,
        )
        try:
            for step in self.steps:
                missing = [
                    (protocol, [t for t in tagged if self._key(t, protocol) not in self.done])
                    for protocol, tagged in step.score
                ]
                missing = [(p, ts) for p, ts in missing if ts]
                if not missing and self.job.undoes:
                    bar.update(len(step.chunk))
                    continue
                applied, apply_s = self._apply(step.chunk, hparams)
                active.append(applied)
                try:
                    context = "".join(a.context for a in active)
                    for protocol, tagged in missing:
                        self._score(protocol, tagged, context, step.edits, apply_s)
                finally:
                    if self.job.undoes:
                        active.pop().undo()
                bar.update(len(step.chunk))
        finally:
            bar.close()

    def _key(self, tagged: Tagged, protocol: str) -> RowKey:
        return (self.job.key, tagged.task, tagged.case.case_id, protocol)

    def _score(
        self, protocol: str, tagged: Sequence[Tagged], context: str, edits: int, apply_s: float
    ) -> None:
        for task in dict.fromkeys(t.task for t in tagged):
            group = [t for t in tagged if t.task == task]
            evaluator = self.x.evaluator_for(self.handle, self.evaluators, task)
            started = time.perf_counter()
            contexts = {t.case.case_id: context for t in group} if context else None
            post = evaluator.evaluate([t.case for t in group], contexts=contexts)
            eval_s = (time.perf_counter() - started) / len(group)
            for t, scores in zip(group, post, strict=True):
                self._write(t, protocol, _finite(scores), edits, {"apply_s": apply_s, "eval_s": eval_s})

    def _write(self, t: Tagged, protocol: str, post: dict[str, float], edits: int, timing: dict) -> None:
        pre = self.pre[t.key]
        row = {
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
        self.x.store.append(row)
        self.done.add(self._key(t, protocol))
        if protocol == modes.IMMEDIATE and "edit_succ" in post and "edit_succ" in pre:
            self.scored += 1
            self.stuck += post["edit_succ"] <= pre["edit_succ"] and post["edit_succ"] < 1.0

    def _general_due(self) -> bool:
        return self.x.general is not None and self.x.general_missing(self.job)

    def _general(self, hparams: Mapping[str, Any], active: list[AppliedEdit], before: dict[str, Any]) -> None:
        """The general-capability check after the job's edits: in sequential mode on the model after
        its last edit; in the undo modes on `--general-edits` cases edited one after another."""
        if self.job.undoes:
            for tagged in self.cases.ordered[: self.x.config.general_edits]:
                active.append(self._apply([tagged], hparams)[0])
        edits = sum(len(s.chunk) for s in self.steps) if not self.job.undoes else len(active)
        record = self.x.general.after(self.handle, before, edits)
        self.x.manifest.setdefault("general", {})[self.job.key] = record
