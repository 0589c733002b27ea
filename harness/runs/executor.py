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
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

from harness.ground import AppliedEdit, EditCase, HarnessError, Method, Metric, MetricInfo
from harness.runs import modes
from harness.runs.catalog import Catalog
from harness.runs.general import GeneralCheck
from harness.runs.modes import Step, Tagged
from harness.runs.plan import Job, RunConfig, task_metrics
from harness.runs.progress import JobWork, RunProgress, Style, choose_style
from harness.runs.schedule import JobSchedule, Warn, warn_stderr
from harness.runs.store import RowKey, RunStore, model_record
from harness.seeding import case_seed, seed_everything

#: Share of a job's edits that may leave its edit-success metrics (`MetricInfo.edit_success`) no
#: better than on the unedited model before we warn.
STUCK_SHARE = 0.5
#: The fewest edits judged by edit-success metrics that the warning speaks of: on fewer, a stuck
#: share says more about the cases drawn than about the method's settings.
STUCK_MIN_EDITS = 5


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


def no_effect_warning(
    job: Job, method: Method, stuck: int, judged: int, metrics: Sequence[str]
) -> str | None:
    """The warning for a job most of whose edits left its edit-success metrics no better than on
    the unedited model, or None when fewer than `STUCK_MIN_EDITS` edits were judged or at most
    `STUCK_SHARE` of them stuck. It names the method's own knobs (`Method.tuning_hint`), and gives
    no tuning advice to a method that declares none."""
    if judged < STUCK_MIN_EDITS or stuck <= STUCK_SHARE * judged:
        return None
    message = (
        f"{job.key}: {stuck} of {judged} edits did not improve {', '.join(metrics)} over the unedited model"
    )
    if not method.tuning_hint:
        return message
    return (
        f"{message}; {job.method} may be mis-configured for this model: try {method.tuning_hint} "
        f"(--set {job.method}.KEY=VALUE; `harness list methods {job.method} --model {job.model}` "
        "shows every hyperparameter with its default)"
    )


def _unscored(schedule: JobSchedule, step: Step, done: set[RowKey]) -> list[tuple[str, list[Tagged]]]:
    """What a step still has to score: (protocol, cases) whose rows are not in cases.jsonl."""
    todo = [
        (protocol, [t for t in tagged if schedule.row_key(t, protocol) not in done])
        for protocol, tagged in step.score
    ]
    return [(protocol, tagged) for protocol, tagged in todo if tagged]


def job_work(schedule: JobSchedule, done: set[RowKey]) -> JobWork:
    """A job's work for the progress display: its edits, and the saved ones (the cases of the
    steps whose every row is in cases.jsonl, which the job's bar starts at)."""
    job = schedule.job
    saved = sum(len(step.chunk) for step in schedule.steps if not _unscored(schedule, step, done))
    source = f" from {job.train_task}" if job.train_task else ""
    label = f"{job.method} {job.task_label} {job.mode}{source}"
    return JobWork(job.key, job.method, label, len(schedule.ordered), saved, job.batch_size)


def handed_cases(
    cases: Iterable[EditCase], method: Method, handle: Any, *, chat_template: bool
) -> list[EditCase]:
    """The cases as `method.apply` is handed them: with every prompt in the chat template of
    `handle`'s tokenizer when the run applies it and the method edits weights, so that it trains on
    the very text the evaluator scores; a method that edits through the context gets them as
    written, because the evaluator puts its context and each probe prompt into one user turn."""
    if not (chat_template and method.capabilities.edits_weights):
        return list(cases)
    from harness.models.tokenization import chat_case

    return [chat_case(handle.tokenizer, case) for case in cases]


class Executor:
    def __init__(
        self,
        config: RunConfig,
        schedules: Sequence[JobSchedule],
        store: RunStore,
        catalog: Catalog,
        *,
        device: str = "auto",
        progress: bool | Style = True,
        warn: Warn = warn_stderr,
        general: GeneralCheck | None = None,
    ) -> None:
        """`progress`: a display style of `harness.runs.progress` ("bars", "lines", "off"), or True
        for bars on a terminal and lines otherwise (stderr decides), False for none."""
        self.config = config
        self.schedules = list(schedules)
        self.store = store
        self.catalog = catalog
        self.device = device
        self.style = choose_style(progress, sys.stderr)
        self.warn = warn
        self.general = general
        self.progress = RunProgress([], style="off")

    def run(self) -> None:
        done, pending = self._start()
        try:
            for model in dict.fromkeys(s.job.model for s in pending):
                handle, record = load_recorded(model, self.catalog, self.device)
                self.store.record_loaded_model(model, record)
                evaluators = Evaluators(handle, self.catalog, self.config, self.store)
                fitting = [self._within_positions(s, evaluators) for s in pending if s.job.model == model]
                for s in fitting:
                    if self._unfinished(s, done):
                        self._warn_no_effect(s.job, run_job(self, handle, evaluators, s, done))
        finally:
            self.progress.close()

    def _start(self) -> tuple[set[RowKey], list[JobSchedule]]:
        """Record the planned jobs in the manifest and start the progress display; the rows saved
        (as keys) and the jobs that still have work."""
        done = self.store.done()
        for s in self.schedules:
            self.store.record_job(s.job, n_cases=len(s.ordered))
            if s.skipped:
                self.store.record_skipped(s.job, s.skipped)
            if s.notes:
                self.store.record_notes(s.job, s.notes)
        pending = [s for s in self.schedules if self._unfinished(s, done)]
        work = [job_work(s, done) for s in self.schedules]
        self.progress = RunProgress(work, self.store.rows(), style=self.style, stream=sys.stderr)
        self.progress.start()
        return done, pending

    def _unfinished(self, s: JobSchedule, done: set[RowKey]) -> bool:
        """Whether the job still lacks rows, or the general check that the run asks for."""
        return not s.row_keys() <= done or self.general_due(s.job)

    def _within_positions(self, s: JobSchedule, evaluators: Evaluators) -> JobSchedule:
        """The job without its cases whose probes exceed the loaded model's positions (with
        --skip-invalid, each named in a warning and the manifest); without the flag such cases
        stop the run here, before the model is edited."""
        fitted, problems = within_positions(s, evaluators, self.config.skip_invalid, self.warn)
        if problems:
            self.store.record_skipped(s.job, problems)
            self.store.record_job(s.job, n_cases=len(fitted.ordered))
            self.schedules[self.schedules.index(s)] = fitted
        return fitted

    def _warn_no_effect(self, job: Job, tally: Tally) -> None:
        """Warn when most of the job's edits left its edit-success metrics where they were."""
        warning = tally.warning(job, self.catalog.method(job.method))
        if warning:
            self.warn(warning)

    def general_due(self, job: Job) -> bool:
        """Whether the job still lacks the general check that the run asks for."""
        return self.general is not None and job.key not in self.store.general_records()


def load_recorded(
    model: str, catalog: Catalog, device: str, device_map: str | None = None
) -> tuple[Any, dict[str, Any]]:
    """The loaded model and its manifest record (`store.model_record`), for either executor: the
    local one records it itself, a Ray worker sends it to the driver."""
    from harness.models import load_model

    started = time.perf_counter()
    handle = load_model(
        model, device=device, device_map=device_map, alias=catalog.registry.models.locate(model)
    )
    return handle, model_record(handle, load_s=time.perf_counter() - started)


def within_positions(
    s: JobSchedule, evaluators: Evaluators, skip_invalid: bool, warn: Warn
) -> tuple[JobSchedule, dict[str, str]]:
    """The job without its cases whose probes exceed the loaded model's positions, and those
    cases (case id -> why). Without `skip_invalid` such a case is a HarnessError naming every one,
    raised before the model is edited; with it, they are named in a warning."""
    problems = {
        (task, case_id): problem
        for task, cases in s.cases.items()
        for case_id, problem in evaluators(task).too_long(cases).items()
    }
    if not problems:
        return s, {}
    count = f"{len(problems)} of {len(s.ordered)} cases"
    named = ", ".join(case_id for _, case_id in problems)
    if not skip_invalid:
        first = next(iter(problems.values()))
        raise HarnessError(
            f"{s.job.key}: {count} are longer than the model's positions ({first}); pass "
            f"--skip-invalid to leave them out, or shorten them: {named}"
        )
    warn(f"{s.job.key}: {count} skipped, longer than the model's positions: {named}")
    return s.without(problems), {case_id: problem for (_, case_id), problem in problems.items()}


class Tally(NamedTuple):
    """How a job's edits fared by its edit-success metrics, for `no_effect_warning`: the edits
    that left them no better than the unedited model, the edits judged, and the metrics judged by
    (shards of one job add up: `Tally.add`)."""

    stuck: int = 0
    judged: int = 0
    metrics: tuple[str, ...] = ()

    def add(self, other: Tally) -> Tally:
        metrics = tuple(dict.fromkeys((*self.metrics, *other.metrics)))
        return Tally(self.stuck + other.stuck, self.judged + other.judged, metrics)

    def warning(self, job: Job, method: Method) -> str | None:
        return no_effect_warning(job, method, self.stuck, self.judged, list(self.metrics))


def run_job(x: Any, handle: Any, evaluators: Evaluators, s: JobSchedule, done: set[RowKey]) -> Tally:
    """Run one job (or, under Ray, one shard of a job) on a loaded model: fit (cross-domain), the
    steps whose rows are not in `done`, and the general check when `x.general_due(job)`; returns
    how its edits fared (the caller warns, once per job, when most of them did nothing).

    `x` is what the job reports to: the local `Executor`, or a Ray worker's stand-in with the same
    attributes (`config`, `catalog`, `store`, `progress`, `general`, `general_due`, `warn`), whose
    `store` sends each row and record to the driver instead of writing it."""
    return _JobRun(x, handle, evaluators, s, done).run()


class Evaluators:
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
            options = EvalOptions(
                alias_policy=self.config.alias_policy,
                seed=self.config.seed,
                chat_template=self.config.chat_template,
            )
            self._by_task[task] = Evaluator(self.handle, metrics, options=options)
            self.store.record_evaluation(task, self._by_task[task].settings())
        return self._by_task[task]


class _JobRun:
    """One job on a loaded model: fit (cross-domain), then the steps, then the general check."""

    def __init__(
        self, x: Any, handle: Any, evaluators: Evaluators, schedule: JobSchedule, done: set[RowKey]
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

    def run(self) -> Tally:
        from harness.hparams import resolve_hparams

        self.hparams = resolve_hparams(self.method, self.handle, self.job.overrides)
        self._check_rendered()
        self.x.store.record_job_started(self.job, self.hparams)
        self.x.progress.start_job(job_work(self.s, self.done))
        self._score_pre()
        general_before = self.x.general.before(self.handle) if self.x.general_due(self.job) else None
        if self.method.capabilities.needs_training:
            self._fit()
        try:
            self._steps()
            if general_before is not None:
                self._general(general_before)
        finally:
            while self.active:
                self.active.pop().undo()
        self.x.store.record_job_finished(self.job)
        self.x.progress.finish_job()
        return Tally(sum(self.no_gain), len(self.no_gain), tuple(self.judged))

    def _fit(self) -> None:
        """Train the method on the job's train split, or load what an earlier training stored
        (trained editors keep their checkpoint as an artifact: `harness.training`), saying which."""
        from harness.training import TrainingDisplay, fit_method

        source = self.job.train_task or self.job.task_label
        style = "off" if self.x.progress.style == "off" else "lines"
        display = TrainingDisplay(sys.stderr, style=style, source=source)
        seed = case_seed(self.x.config.seed, f"fit:{source}")
        fit_method(self.method, self.handle, self._handed(self.s.train), self.hparams, display, seed=seed)

    def _steps(self) -> None:
        """The job loop: apply each step's chunk, score what it asks for that is not yet in
        cases.jsonl, and (undo modes) take the edit back."""
        self.x.progress.start_edits()
        for step in self.s.steps:
            todo = _unscored(self.s, step, self.done)
            if todo or not self.job.undoes:  # sequential replays a finished step's edit
                with self._applied(step.chunk) as apply_s:
                    context = "".join(a.context for a in self.active)
                    for protocol, tagged in todo:
                        self._score(protocol, tagged, context, step.edits, apply_s)
            if todo:  # a saved step is in the count the progress started at
                self.x.progress.advance(len(step.chunk))

    def _apply(self, chunk: Sequence[Tagged]) -> float:
        """Edit the chunk's cases (seeded by its first case) onto the model; seconds taken."""
        seed_everything(case_seed(self.x.config.seed, chunk[0].case.case_id))
        started = time.perf_counter()
        self.active.append(self.method.apply(self.handle, self._handed(t.case for t in chunk), self.hparams))
        return time.perf_counter() - started

    def _handed(self, cases: Iterable[EditCase]) -> list[EditCase]:
        return handed_cases(cases, self.method, self.handle, chat_template=self.x.config.chat_template)

    def _check_rendered(self) -> None:
        """Refuse, before the job's first edit, a case that the method cannot edit once it is put in
        the chat template (the schedule asked `check_case` of the cases as written): ROME's subject
        may also occur in the template's own text, such as a system prompt naming its maker."""
        if not (self.x.config.chat_template and self.method.capabilities.edits_weights):
            return
        cases = self._handed(t.case for t in self.s.ordered)
        problems = [problem for case in cases if (problem := self.method.check_case(case))]
        if problems:
            raise HarnessError(
                f"{self.job.key}: in the model's chat template, {self.job.method} cannot edit "
                f"{len(problems)} of {len(cases)} cases (first: {problems[0]}); run it without the chat "
                "template, or leave those cases out"
            )

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
            told = self.x.progress.scoring(task)
            evaluator.prepare(cases, told)
            scores = evaluator.evaluate_pre(cases, told)
            self.x.progress.scored()
            for case, case_scores in zip(cases, scores, strict=True):
                self.pre[(task, case.case_id)] = _finite(case_scores)

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
        self.x.progress.row(row)
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
