"""Running a plan on a Ray cluster: jobs (and shards of jobs) on workers that keep a loaded model.

`harness run --executor ray` hands the schedules that `schedule` made to this executor instead of
the local one. The driver (the `harness run` process) stays the only writer of the run directory:
workers send every row and record back as it is made (a Ray streaming generator per unit of work),
and the driver writes it through the same `RunStore` calls as the local executor, so cases.jsonl,
`--resume` and the summary mean what they mean on one machine.

Units of work: a sequential job is one unit (its edits build on each other, so it is never split);
a job of an undo mode (single, batch, cross-domain) without a general check due is cut into up to
as many shards of consecutive steps as there are workers, each scored on the unedited model for its
own cases and edited exactly as the whole job would be (every apply is seeded by its first case).
A worker runs a unit with `executor.run_job`, the very job loop of the local executor, on its
loaded model; it loads a model only when a unit of another model comes, and prefers such units
last.

Exactly once: the driver writes a row only if its key is not yet in cases.jsonl. A worker that
dies (killed, out of memory, its node lost) ends its unit's stream with an error; the driver starts
a new worker and hands it the unit again with the rows saved so far, so the unit skips what is
scored (an undo-mode step) or replays it without scoring (a sequential step), as a resumed run does.
A unit whose worker dies `MAX_DEATHS` times stops the run. A driver that dies takes its workers with
it; `harness run --resume` then continues from cases.jsonl like any killed run.

Placement: each job's device memory is estimated at plan time (`harness.runs.memory`); the workers
say how much memory their device has (their GPUs' total, or their node's RAM shared among the
node's workers), a job that fits on no worker is refused before any model loads, and a unit goes
only to a worker that can hold it.

Ray is imported only here, and this module only when `--executor ray` is asked for.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
import os
import queue
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.ground import HarnessError
from harness.runs.catalog import Catalog
from harness.runs.executor import (
    Evaluators,
    Executor,
    Tally,
    job_work,
    load_recorded,
    run_job,
    within_positions,
)
from harness.runs.general import GeneralCheck
from harness.runs.memory import HEADROOM, MemoryEstimate, dtype_bytes_for, estimate_jobs, refuse_unplaceable
from harness.runs.plan import Job, RunConfig
from harness.runs.progress import RunProgress
from harness.runs.schedule import JobSchedule
from harness.runs.store import RowKey, row_key

#: How many times a unit's worker may die before the run stops with an error.
MAX_DEATHS = 3
#: Seconds the driver waits for a worker's next message before it checks for Ctrl-C again.
POLL_S = 0.5


@dataclass(frozen=True)
class RayOptions:
    """How a run uses Ray (`harness run --executor ray`).

    catalog_factory: builds the plugins' catalog inside each worker; it must be importable there
    (a module-level function), and give the same plugins as the driver's catalog (`harness run`
    passes `harness.commands.installed_catalog`).
    address: the cluster to join (`ray start --head` prints it; "auto" finds one on this machine);
    None starts a local cluster in this process (or uses the one `ray.init` already started).
    gpus_per_job: GPUs each worker holds (a job's model is spread over them when more than one);
    0 runs on CPUs, one CPU per worker.
    workers: how many workers to start; None: as many as the cluster's GPUs (or CPUs) allow.
    """

    catalog_factory: Callable[[], Catalog]
    address: str | None = None
    gpus_per_job: float = 0
    workers: int | None = None


def shards(s: JobSchedule, n: int) -> list[JobSchedule]:
    """The job cut into at most `n` schedules of consecutive steps, each with only its own cases
    (a sequential job, or one with a single step, stays whole)."""
    if not s.job.undoes or n <= 1 or len(s.steps) <= 1:
        return [s]
    size = math.ceil(len(s.steps) / n)
    out = []
    for start in range(0, len(s.steps), size):
        steps = s.steps[start : start + size]
        keys = {t.key for step in steps for t in step.chunk}
        cases = {
            task: tuple(c for c in task_cases if (task, c.case_id) in keys)
            for task, task_cases in s.cases.items()
        }
        ordered = tuple(t for t in s.ordered if t.key in keys)
        out.append(dataclasses.replace(s, cases=cases, ordered=ordered, steps=steps))
    return out


@dataclass
class _Unit:
    """One shard of a job, as the driver tracks it."""

    number: int
    schedule: JobSchedule
    general: bool
    estimate: MemoryEstimate | None
    deaths: int = 0

    @property
    def job(self) -> Job:
        return self.schedule.job


class _Relay:
    """A worker's stand-in for the run store: each record goes to the driver as a message."""

    def __init__(self, send: Callable[[tuple], None]) -> None:
        self.send = send

    def append(self, row: Mapping[str, Any]) -> None:
        self.send(("row", dict(row)))

    def record_job_started(self, job: Job, hparams: Mapping[str, Any]) -> None:
        self.send(("started", job.key, dict(hparams)))

    def record_job_finished(self, job: Job) -> None:
        """The driver marks a job finished once all its units are."""

    def record_general(self, job: Job, record: Mapping[str, Any]) -> None:
        self.send(("general", job.key, dict(record)))

    def record_evaluation(self, task: str, settings: Mapping[str, Any]) -> None:
        self.send(("evaluation", task, dict(settings)))


@dataclass
class _Host:
    """What `run_job` reports to, inside a worker (the attributes the local `Executor` has)."""

    config: RunConfig
    catalog: Catalog
    store: _Relay
    progress: RunProgress
    general: GeneralCheck | None
    due: bool
    warn: Callable[[str], None]

    def general_due(self, job: Job) -> bool:
        return self.due


_END = "end"


class Worker:
    """A Ray actor (made one by `ray.remote` in `_actor_class`): one device, one loaded model at a
    time, kept between units."""

    def __init__(
        self, catalog_factory: Callable[[], Catalog], config: RunConfig, device: str, gpus: float
    ) -> None:
        self.catalog = catalog_factory()
        self.config = config
        self.device = device
        self.gpus = gpus
        self.model: str | None = None
        self.handle: Any = None
        self.evaluators: Evaluators | None = None

    def describe(self) -> tuple[str, int, int]:
        """(node id, bytes of device memory, process id): the GPUs Ray gave this worker (its share
        of one, for a fraction of a GPU), or the node's RAM (which the driver shares among the
        node's workers)."""
        import ray

        node = ray.get_runtime_context().get_node_id()
        if self.gpus:
            import torch

            total = sum(
                torch.cuda.get_device_properties(i).total_memory for i in range(torch.cuda.device_count())
            )
            capacity = int(total * min(self.gpus, 1))
        else:
            capacity = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return node, capacity, os.getpid()

    def run(
        self, s: JobSchedule, done: set[RowKey], general: GeneralCheck | None, due: bool
    ) -> Iterator[tuple]:
        """Run one unit, yielding each message for the driver as it is made (a row, a record, a
        warning); an error in the unit is raised after the messages made before it."""
        messages: queue.Queue = queue.Queue()

        def work() -> None:
            try:
                self._run(s, done, general, due, messages.put)
                messages.put((_END, None))
            except BaseException as exc:  # raised again in the generator, for the driver
                messages.put((_END, exc))

        threading.Thread(target=work, daemon=True).start()
        while True:
            message = messages.get()
            if message[0] == _END:
                if message[1] is not None:
                    raise message[1]
                return
            yield message

    def _run(
        self,
        s: JobSchedule,
        done: set[RowKey],
        general: GeneralCheck | None,
        due: bool,
        send: Callable[[tuple], None],
    ) -> None:
        if self.model != s.job.model:
            self.handle = self.evaluators = None  # the previous model goes before the next loads
            device_map = "auto" if self.gpus > 1 else None
            self.handle, record = load_recorded(s.job.model, self.catalog, self.device, device_map)
            self.model = s.job.model
            send(("model", s.job.model, record))
        relay = _Relay(send)
        self.evaluators = self.evaluators or Evaluators(self.handle, self.catalog, self.config, relay)
        self.evaluators.store = relay  # this unit's messages go to this unit's stream

        def warn(message: str) -> None:
            send(("warn", message))

        s, problems = within_positions(s, self.evaluators, self.config.skip_invalid, warn)
        if problems:
            send(("skipped", s.job.key, problems, [t.key for t in s.ordered]))
        progress = RunProgress([job_work(s, done)], style="off")
        host = _Host(self.config, self.catalog, relay, progress, general, due, warn)
        send(("tally", s.job.key, run_job(host, self.handle, self.evaluators, s, done)))


@functools.cache
def _actor_class() -> Any:
    """`Worker` as a Ray actor class, made once per process."""
    import ray

    return ray.remote(Worker)


@dataclass
class _Slot:
    """A started worker, as the driver sees it: its node, its device's memory in bytes (a node's
    RAM for a CPU worker, which `RayExecutor._capacity` shares), its process id."""

    actor: Any
    node: str
    capacity: int
    pid: int
    model: str | None = None
    unit: _Unit | None = None
    stream: Any = None


class RayExecutor(Executor):
    """The local executor's bookkeeping (manifest, resume, progress) with the work on Ray workers.

    The cluster is joined and the workers started when it is made (`connect`), before the run
    directory is touched, so a job that fits on no worker is refused with nothing written."""

    def __init__(self, *args: Any, options: RayOptions, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.options = options
        self.slots: list[_Slot] = []
        self.estimates: dict[str, MemoryEstimate | None] = {}
        #: Job key -> its units not yet finished.
        self.open: dict[str, int] = {}
        #: Job key -> how its finished units' edits fared (warned about once the job is finished).
        self.tallies: dict[str, Tally] = {}

    # -- the cluster ------------------------------------------------------------------------

    def connect(self) -> None:
        """Join (or start) the cluster, start the workers, and refuse a job that none can hold."""
        import ray

        if not ray.is_initialized():
            try:
                ray.init(address=self.options.address, include_dashboard=False)
            except ConnectionError as exc:
                raise HarnessError(f"cannot join the Ray cluster at {self.options.address}: {exc}") from None
        self.estimates = estimate_jobs(
            [s.job for s in self.schedules],
            self.catalog,
            dtype_bytes_for(self.device, self.options.gpus_per_job),
        )
        count = self.options.workers or self._fitting_workers(ray.cluster_resources())
        try:
            for _ in range(count):
                self.slots.append(self._start_worker())
            where = "worker's GPUs" if self.options.gpus_per_job else "worker's share of its node's memory"
            refuse_unplaceable(self.estimates, [self._capacity(slot) for slot in self.slots], where)
        except BaseException:
            self._stop()
            raise

    def _fitting_workers(self, resources: Mapping[str, float]) -> int:
        """As many workers as the cluster holds: GPUs over GPUs per job, or one per CPU."""
        gpus = self.options.gpus_per_job
        if gpus:
            have = resources.get("GPU", 0)
            if have < gpus:
                raise HarnessError(
                    f"--gpus-per-job {gpus:g}: the Ray cluster has {have:g} GPU(s); start its nodes with "
                    "GPUs, or ask for fewer per job"
                )
            return int(have // gpus)
        return max(1, int(resources.get("CPU", 1)))

    def _start_worker(self) -> _Slot:
        import ray

        gpus = self.options.gpus_per_job
        actor = (
            _actor_class()
            .options(num_cpus=1, num_gpus=gpus)
            .remote(self.options.catalog_factory, self.config, self.device, gpus)
        )
        node, capacity, pid = ray.get(actor.describe.remote())
        return _Slot(actor, node, capacity, pid)

    def _capacity(self, slot: _Slot) -> int:
        """The device memory a job on the slot may use: its GPUs', or (CPU workers share their
        node's RAM) its share of the node's."""
        if self.options.gpus_per_job:
            return slot.capacity
        return slot.capacity // sum(1 for other in self.slots if other.node == slot.node)

    # -- the run ----------------------------------------------------------------------------

    def run(self) -> None:
        if not self.slots:
            self.connect()
        done, pending = self._start()
        units = self._units(pending, done)
        waiting = collections.deque(units)
        try:
            while waiting or any(slot.unit for slot in self.slots):
                for slot in self.slots:
                    if slot.unit is None and waiting:
                        self._dispatch(slot, waiting, done)
                self._receive(waiting, done)
        finally:
            self._stop()
            self.progress.close()

    def _units(self, pending: Sequence[JobSchedule], done: set[RowKey]) -> list[_Unit]:
        units = []
        for s in pending:
            due = self.general_due(s.job)
            parts = [s] if due else shards(s, len(self.slots))
            parts = [p for p in parts if not p.row_keys() <= done] or parts[:1]
            self.open[s.job.key] = len(parts)
            estimate = self.estimates.get(s.job.key)
            units.extend(_Unit(i, p, due, estimate) for i, p in enumerate(parts))
        return units

    def _fits(self, slot: _Slot, unit: _Unit) -> bool:
        return unit.estimate is None or unit.estimate.total <= HEADROOM * self._capacity(slot)

    def _dispatch(self, slot: _Slot, waiting: collections.deque[_Unit], done: set[RowKey]) -> None:
        """Hand the slot the first waiting unit it can hold, one of its loaded model first."""
        fitting = [u for u in waiting if self._fits(slot, u)]
        if not fitting:
            return
        unit = next((u for u in fitting if u.job.model == slot.model), fitting[0])
        waiting.remove(unit)
        keys = unit.schedule.row_keys()
        slot.unit = unit
        slot.model = unit.job.model
        slot.stream = slot.actor.run.remote(unit.schedule, done & keys, self.general, unit.general)

    def _receive(self, waiting: collections.deque[_Unit], done: set[RowKey]) -> None:
        """Write what the busy workers have sent; finish or reschedule the units that ended."""
        import ray

        busy = [slot for slot in self.slots if slot.unit is not None]
        if not busy:
            names = ", ".join(unit.job.key for unit in waiting)
            raise HarnessError(
                f"no worker can hold what is left ({names}): its estimate exceeds every worker's"
            )
        ready, _ = ray.wait([slot.stream for slot in busy], num_returns=1, timeout=POLL_S)
        for slot in busy:
            if slot.stream not in ready:
                continue
            try:
                message = ray.get(next(slot.stream))
            except StopIteration:
                self._finished(slot)
                continue
            except ray.exceptions.RayActorError as exc:
                self._died(slot, waiting, exc)
                continue
            except ray.exceptions.RayTaskError as exc:
                raise exc.cause if isinstance(exc.cause, BaseException) else exc from None
            self._take(message, done)

    def _take(self, message: tuple, done: set[RowKey]) -> None:
        """Write one worker message through the store, as the local executor would have."""
        kind, *rest = message
        jobs = {s.job.key: s.job for s in self.schedules}
        if kind == "row":
            (row,) = rest
            if row_key(row) not in done:
                self.store.append(row)
                done.add(row_key(row))
                self.progress.row(row)
        elif kind == "started":
            self.store.record_job_started(jobs[rest[0]], rest[1])
        elif kind == "evaluation":
            self.store.record_evaluation(*rest)
        elif kind == "model":
            self.store.record_loaded_model(*rest)
        elif kind == "general":
            self.store.record_general(jobs[rest[0]], rest[1])
        elif kind == "skipped":
            self._skipped(jobs[rest[0]], rest[1], rest[2])
        elif kind == "tally":
            self.tallies[rest[0]] = self.tallies.get(rest[0], Tally()).add(rest[1])
        elif kind == "warn":
            self.warn(rest[0])

    def _skipped(self, job: Job, problems: Mapping[str, str], kept: Sequence[tuple[str, str]]) -> None:
        """A worker left out cases longer than the model's positions: the job's planned cases
        shrink by them (for the run's counts), and the manifest names them."""
        index = next(i for i, s in enumerate(self.schedules) if s.job.key == job.key)
        s = self.schedules[index]
        left_out = {t.key for t in s.ordered if t.case.case_id in problems and t.key not in set(kept)}
        self.schedules[index] = s.without(left_out)
        self.store.record_skipped(job, problems)
        self.store.record_job(job, n_cases=len(self.schedules[index].ordered))

    def _finished(self, slot: _Slot) -> None:
        unit = slot.unit
        assert unit is not None
        slot.unit = slot.stream = None
        self.open[unit.job.key] -= 1
        if not self.open[unit.job.key]:
            self.store.record_job_finished(unit.job)
            self._warn_no_effect(unit.job, self.tallies.get(unit.job.key, Tally()))
        if self.style != "off":
            from tqdm import tqdm

            left = sum(self.open.values())
            tqdm.write(
                f"{unit.job.key} part {unit.number + 1} done on worker {slot.pid}; {left} part(s) left"
            )

    def _died(self, slot: _Slot, waiting: collections.deque[_Unit], error: Exception) -> None:
        """The slot's worker is gone: start another in its place and queue its unit first again."""
        unit = slot.unit
        assert unit is not None
        unit.deaths += 1
        if unit.deaths >= MAX_DEATHS:
            raise HarnessError(
                f"{unit.job.key}: its worker died {unit.deaths} times (last: {error}); the saved cases stay "
                "in cases.jsonl, and --resume continues once the cause (memory, a node) is fixed"
            )
        self.warn(
            f"worker {slot.pid} died running {unit.job.key} ({type(error).__name__}); rescheduling its cases"
        )
        self.slots[self.slots.index(slot)] = self._start_worker()
        waiting.appendleft(unit)

    def _stop(self) -> None:
        import ray

        for slot in self.slots:
            ray.kill(slot.actor)
        self.slots = []
