"""The plan's second half: each job's cases read, checked against its method, and laid out in steps.

`build_plan` refuses what names, capabilities and modes make impossible without reading any data.
Here the data is read and every case is asked `Method.check_case`, still before the run folder is
made or a model loads, so a case a method cannot edit stops the run at once (or, with
--skip-invalid, is left out with a warning). A `JobSchedule` is then everything a job will do,
decided: the executor only executes it, and resuming compares its row keys with cases.jsonl.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

from tqdm import tqdm

from harness.ground import EditCase, HarnessError, Method
from harness.runs import modes
from harness.runs.catalog import Catalog
from harness.runs.modes import Step, Tagged
from harness.runs.plan import Job, RunConfig
from harness.runs.store import RowKey
from harness.schemas import format_issues

Warn = Callable[[str], None]


def warn_stderr(message: str) -> None:
    """The default warning channel: stderr, above any progress bar."""
    tqdm.write(f"warning: {message}", file=sys.stderr)


@dataclass(frozen=True)
class JobSchedule:
    """One job's work: its editable cases per task (task order), the same cases tagged in editing
    order, the `apply` steps over them, and (cross-domain) the train split it is fitted on; the
    cases its method cannot edit, left out with --skip-invalid (`skipped`, case id -> why), and its
    method's notes on the cases it edits (`Method.case_note`, case id -> note)."""

    job: Job
    cases: Mapping[str, tuple[EditCase, ...]]
    ordered: tuple[Tagged, ...]
    steps: tuple[Step, ...]
    train: tuple[EditCase, ...] = ()
    skipped: Mapping[str, str] = field(default_factory=dict)
    notes: Mapping[str, str] = field(default_factory=dict)

    def row_key(self, tagged: Tagged, protocol: str) -> RowKey:
        return (self.job.key, tagged.task, tagged.case.case_id, protocol)

    def without(self, left_out: Collection[tuple[str, str]]) -> JobSchedule:
        """The same job without some cases (`(task, case_id)` keys), its steps laid out anew: for
        cases that only the loaded model shows cannot run (a probe beyond its positions)."""
        cases = {
            task: tuple(c for c in task_cases if (task, c.case_id) not in left_out)
            for task, task_cases in self.cases.items()
        }
        ordered = tuple(t for t in self.ordered if t.key not in left_out)
        return dataclasses.replace(self, cases=cases, ordered=ordered, steps=_steps(self.job, ordered))

    def row_keys(self) -> set[RowKey]:
        """Every row the job writes to cases.jsonl when it runs to its end."""
        return {
            self.row_key(t, protocol)
            for step in self.steps
            for protocol, tagged in step.score
            for t in tagged
        }


class _Splits:
    """Task splits, each read once per run, with a warning for records skipped as invalid."""

    def __init__(self, catalog: Catalog, config: RunConfig, warn: Warn) -> None:
        self.catalog = catalog
        self.config = config
        self.warn = warn
        self._loaded: dict[tuple[str, str], tuple[EditCase, ...]] = {}

    def __call__(self, task: str, split: str) -> tuple[EditCase, ...]:
        if (task, split) not in self._loaded:
            loaded = self.catalog.task(task).load(
                split=split, data_dir=self.config.data_dir, skip_invalid=self.config.skip_invalid
            )
            if loaded.skipped:
                self.warn(
                    f"task {task!r}: invalid records of {loaded.source} skipped (`harness validate "
                    f"{loaded.source} --task {task}` checks the file):\n"
                    + format_issues(loaded.skipped, limit=len(loaded.skipped))
                )
            self._loaded[(task, split)] = tuple(loaded.cases)
        return self._loaded[(task, split)]


def _edit_of(case: EditCase) -> tuple[str, str]:
    """What makes a train case the same edit as a test case, whatever file or id each comes from."""
    return case.prompt.strip(), case.target_new.strip()


@dataclass(frozen=True)
class _Checked:
    """A job's cases of one task as its method sees them: those it edits, the others (case id ->
    why), and its notes on those it edits (case id -> note)."""

    editable: tuple[EditCase, ...]
    skipped: dict[str, str]
    notes: dict[str, str]


def _lines(items: Mapping[str, str]) -> str:
    return "".join(f"\n  {case_id}: {text}" for case_id, text in items.items())


def _editable(
    job: Job, method: Method, cases: Sequence[EditCase], skip_invalid: bool, warn: Warn
) -> _Checked:
    """The cases the job's method can edit: one it cannot stops the run, or with --skip-invalid is
    left out, each named in a warning; the method's notes on the others are warned about too."""
    problems = {c.case_id: problem for c in cases if (problem := method.check_case(c))}
    count = f"{len(problems)} of {len(cases)} cases"
    if problems and not skip_invalid:
        first = next(iter(problems.values()))
        raise HarnessError(
            f"{job.key}: {job.method} cannot edit {count} (first: {first}); fix the data, leave "
            f"this method or task out, or pass --skip-invalid to skip such cases: {', '.join(problems)}"
        )
    if problems:
        warn(f"{job.key}: {count} skipped that {job.method} cannot edit:{_lines(problems)}")
    editable = tuple(c for c in cases if c.case_id not in problems)
    notes = {c.case_id: note for c in editable if (note := method.case_note(c))}
    if notes:
        warn(
            f"{job.key}: {job.method}'s notes on {len(notes)} of {len(editable)} cases (kept in the "
            f"manifest):{_lines(notes)}"
        )
    return _Checked(editable, problems, notes)


def _steps(job: Job, ordered: Sequence[Tagged]) -> tuple[Step, ...]:
    """The `apply` steps of the job's mode over its cases in editing order."""
    return tuple(modes.steps(ordered, job.batch_size, sequential=not job.undoes, eval_at=job.eval_at))


def _train_cases(job: Job, method: Method, splits: _Splits) -> tuple[EditCase, ...]:
    """What a trained method (`needs_training`) learns from: the train split of the cross-domain
    source, or else of the job's own task(s); nothing for other methods."""
    if not method.capabilities.needs_training:
        return ()
    sources = (job.train_task,) if job.train_task else job.tasks
    return tuple(case for task in sources for case in splits(task, "train"))


def schedule(jobs: Sequence[Job], config: RunConfig, catalog: Catalog, warn: Warn) -> list[JobSchedule]:
    """The schedule of every job, in plan order; raises HarnessError for a case a method cannot
    edit (unless `config.skip_invalid`) and for a task whose data cannot be read."""
    splits = _Splits(catalog, config, warn)
    schedules = []
    for job in jobs:
        method = catalog.method(job.method)
        checked = {
            task: _editable(
                job, method, splits(task, config.split)[: config.limit], config.skip_invalid, warn
            )
            for task in job.tasks
        }
        cases = {task: c.editable for task, c in checked.items()}
        per_task = [[Tagged(task, c) for c in task_cases] for task, task_cases in cases.items()]
        ordered = modes.interleave(per_task, config.seed) if len(per_task) > 1 else per_task[0]
        train = _train_cases(job, method, splits)
        learnt = {_edit_of(c) for c in train}
        seen = [t for t in ordered if _edit_of(t.case) in learnt]
        if seen:
            warn(
                f"{job.key}: {len(seen)} of the {len(ordered)} edited cases are in the train split "
                f"{job.method} learns from (the same prompt and target: a task whose test split is "
                "its train split, or files that share records?): its scores on them are not held out"
            )
        skipped = {case_id: why for c in checked.values() for case_id, why in c.skipped.items()}
        notes = {case_id: note for c in checked.values() for case_id, note in c.notes.items()}
        schedules.append(JobSchedule(job, cases, tuple(ordered), _steps(job, ordered), train, skipped, notes))
    return schedules
