"""A run's progress, shown so that people can plan by it: what the run will do, where it is, and
when it will end.

Before anything loads, the run says how many jobs and edits it has, how many are saved already
(`--resume`) and, when the rows allow one, an estimate of the time left. Then, by `Style`:

- "bars" (output to a terminal): an overall bar over the run's edits ("job 3 of 36", the edits
  left, the ETA) and under it a bar for the current job's edits, or for the unedited model's
  scoring while that runs;
- "lines" (output to a file or a pipe, or `harness run --no-progress`): a plain line per edited
  case (per batch in batch modes), with the job, counts, elapsed time and ETA, and a line when a
  job or the unedited model's scoring starts;
- "off": nothing (the API's `progress=False`).

An edit here is one edited case, whatever the mode. The ETA comes from the rows' timing
(`Estimator`), not from the clock: an edit's cost is its scoring time plus its share of the
`apply` call, as cases.jsonl records them, so a resumed run estimates from the edits its earlier
sessions timed, and the saved edits it skips do not count as fast ones (the bars start at the saved
count). Jobs of a method with no timed edit yet have no rate: the estimate is then a lower bound,
and says which methods it leaves out. The unedited model's scoring (once per task and model, and
often read from the cache) is not in the estimate; it has a bar of its own.
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any, Literal

from tqdm import tqdm

from harness.runs.modes import IMMEDIATE

Style = Literal["bars", "lines", "off"]


def choose_style(progress: bool | Style, stream: IO[str]) -> Style:
    """`progress` as a style: True picks bars for a terminal and lines for anything else (a log
    file, a pipe), False is "off"; a style is taken as it is."""
    if progress is True:
        return "bars" if stream.isatty() else "lines"
    if progress is False:
        return "off"
    return progress


def count(n: int, noun: str) -> str:
    """`1 job`, `36 jobs`."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def duration(seconds: float) -> str:
    """`1h02m`, `3m10s`, `42s`: a span of time at the precision a plan needs."""
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


@dataclass(frozen=True)
class JobWork:
    """What progress needs of one job: its key, method, label, number of edits (cases edited), how
    many of them are saved already, and its batch size (how many cases share one `apply` call)."""

    key: str
    method: str
    label: str
    edits: int
    saved: int = 0
    batch_size: int = 1


@dataclass(frozen=True)
class Estimate:
    """Seconds left for the timed part of the work, and the methods with edits left that have no
    timed edit yet (whose time is not in `seconds`)."""

    seconds: float
    untimed: tuple[str, ...] = ()

    def __str__(self) -> str:
        if not self.untimed:
            return duration(self.seconds)
        methods = ", ".join(self.untimed)
        if not self.seconds:
            return f"unknown until {methods} {'is' if len(self.untimed) == 1 else 'are'} timed"
        return f"at least {duration(self.seconds)} ({methods} not timed yet)"


class Estimator:
    """Seconds per edit, per job and per method, from the timing of the rows of cases.jsonl.

    A row adds its `eval_s` (seconds of scoring per case); an `immediate` row, one per edited case,
    adds its share of the `apply` call (`apply_s` over the job's batch size) and counts one edit.
    Re-scoring rows of sequential checkpoints (`after-N`) add their scoring time to the edits of
    their job. A job with timed edits is estimated at its own rate; one without, at its method's
    rate over the run's other jobs; a method without any timed edit has no rate.

    A method's first timed edit is its warm-up: it pays for what the method builds once and caches
    (MEMIT's second moments take minutes on a CPU, the first time only), so it counts only as long
    as it is the method's one timed edit; from the second on, the rates leave it out.
    """

    def __init__(self, jobs: Iterable[JobWork]) -> None:
        self._jobs = {job.key: job for job in jobs}
        self._seconds: dict[str, float] = defaultdict(float)
        self._edits: dict[str, int] = defaultdict(int)
        self._warmup: dict[str, tuple[str, float]] = {}  # method -> (job key, seconds of its first edit)

    def add(self, row: Mapping[str, Any]) -> None:
        """Count one row (rows of jobs that are not in the run are ignored)."""
        job = self._jobs.get(row["job"])
        if job is None:
            return
        timing = row.get("timing", {})
        seconds = float(timing.get("eval_s", 0.0))
        if row["protocol"] != IMMEDIATE:
            self._seconds[job.key] += seconds
            return
        seconds += float(timing.get("apply_s", 0.0)) / job.batch_size
        if job.method not in self._warmup:
            self._warmup[job.method] = (job.key, seconds)
            return
        self._seconds[job.key] += seconds
        self._edits[job.key] += 1

    def timed(self) -> int:
        """How many edits the rows have timed."""
        return sum(self._edits.values()) + len(self._warmup)

    def per_edit(self, key: str) -> float | None:
        """Seconds per edit of job `key`: its own rate, else its method's, else None."""
        method = self._jobs[key].method
        same = [k for k, job in self._jobs.items() if job.method == method and self._edits[k]]
        if not same:  # the warm-up edit, if any, is all there is to go by
            if method not in self._warmup:
                return None
            warm_key, warm_seconds = self._warmup[method]
            return (self._seconds[warm_key] + warm_seconds) / (self._edits[warm_key] + 1)
        if self._edits[key]:
            return self._seconds[key] / self._edits[key]
        return sum(self._seconds[k] for k in same) / sum(self._edits[k] for k in same)

    def remaining(self, left: Mapping[str, int]) -> Estimate:
        """The time the edits `left` (job key -> edits still to do) will take."""
        seconds, untimed = 0.0, []
        for key, count in left.items():
            if count <= 0:
                continue
            rate = self.per_edit(key)
            if rate is None:
                untimed.append(self._jobs[key].method)
            else:
                seconds += rate * count
        return Estimate(seconds, tuple(dict.fromkeys(untimed)))


class RunProgress:
    """The state of a run's progress (edits done per job, the estimator, the elapsed time), told
    by the executor at each event, and shown by its `style`."""

    def __init__(
        self,
        jobs: Sequence[JobWork],
        rows: Iterable[Mapping[str, Any]] = (),
        *,
        style: Style = "off",
        stream: IO[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.jobs = list(jobs)
        self.estimator = Estimator(self.jobs)
        for row in rows:
            self.estimator.add(row)
        self.done = {job.key: job.saved for job in self.jobs}
        self.style = style
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.started = clock()
        self.current: JobWork | None = None
        self._overall: tqdm | None = None
        self._bar: tqdm | None = None
        self._scoring: tuple[int, int] = (0, 0)  # requests of finished phases, of the current one
        self._scoring_started = 0.0

    # -- what the numbers are ---------------------------------------------------------------

    @property
    def total(self) -> int:
        return sum(job.edits for job in self.jobs)

    @property
    def finished(self) -> int:
        return sum(self.done.values())

    def eta(self) -> Estimate:
        return self.estimator.remaining({job.key: job.edits - self.done[job.key] for job in self.jobs})

    def plan_text(self) -> str:
        """What the run will do, said before it starts."""
        methods = len({job.method for job in self.jobs})
        saved = sum(job.saved for job in self.jobs)
        text = f"{count(len(self.jobs), 'job')} ({count(methods, 'method')}): {count(self.total, 'edit')}"
        if saved:
            text += f", {saved} saved, {self.total - saved} left"
        if self.total == saved:
            return text
        timed = self.estimator.timed()
        if not timed:
            return f"{text}; a time estimate follows each method's first edits"
        return f"{text}; estimate {self.eta()}, from the timing of {timed} saved edits"

    def _position(self) -> str:
        job = self.current
        assert job is not None
        index = self.jobs.index(job) + 1
        return f"job {index} of {len(self.jobs)}"

    # -- events -----------------------------------------------------------------------------

    def start(self) -> None:
        """Say what the run will do, and (bars) open the overall bar at the saved count."""
        if self.style == "off":
            return
        self._say(self.plan_text())
        if self.style == "bars":
            self._overall = tqdm(
                total=self.total,
                initial=self.finished,
                desc="run",
                unit="edit",
                file=self.stream,
                dynamic_ncols=True,
                position=0,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} edits [{elapsed}{postfix}]",
            )
            self._refresh()

    def start_job(self, job: JobWork) -> None:
        """A job starts. `job` is its work as it is now, which replaces what the run started with
        (a job may have lost cases since, which the loaded model cannot score)."""
        index = next(i for i, planned in enumerate(self.jobs) if planned.key == job.key)
        self.jobs[index] = job  # the estimator keeps the planned one: key, method, batch size
        self.done[job.key] = job.saved
        self.current = job
        if self._overall is not None:
            self._overall.total = self.total
        if self.style == "lines":
            saved = f", {job.saved} saved" if job.saved else ""
            self._say(f"{self._position()}: {job.label}, {count(job.edits, 'edit')}{saved}")
        self._refresh()

    def scoring(self, task: str) -> Callable[[int, int], None]:
        """The callback for the unedited model's scoring of `task` (`Evaluator.prepare` and
        `evaluate_pre` call it with requests done and total, once per phase, starting at 0)."""
        self._scoring = (0, 0)
        self._scoring_started = self.clock()
        label = f"{self._position()}: unedited model on {task}"

        def update(done: int, total: int) -> None:
            finished, current = self._scoring
            if done == 0:  # a new phase: the previous one is complete
                finished, current = finished + current, total
                self._scoring = (finished, current)
            if self.style == "lines" and done == 0 and total and not finished:
                self._say(f"{label}: scoring")  # the count comes at the end, over every phase
            if self.style != "bars":
                return
            if self._bar is None:
                self._bar = self._new_bar(label, unit="request", total=finished + current)
            self._bar.total = finished + current
            self._bar.n = finished + done
            self._bar.refresh()

        return update

    def scored(self) -> None:
        """The unedited model's scoring of a task has ended."""
        self._close_bar()
        finished, current = self._scoring
        if self.style == "lines" and finished + current:
            took = duration(self.clock() - self._scoring_started)
            self._say(
                f"{self._position()}: unedited model scored ({count(finished + current, 'request')}, {took})"
            )

    def start_edits(self) -> None:
        """The job's editing starts: (bars) its bar opens at its saved count."""
        job = self.current
        assert job is not None
        if self.style == "bars":
            self._bar = self._new_bar(job.label, unit="edit", total=job.edits, initial=job.saved)
            self._refresh()

    def row(self, row: Mapping[str, Any]) -> None:
        """A row was written: its timing feeds the estimate."""
        self.estimator.add(row)

    def advance(self, edits: int) -> None:
        """`edits` more edits of the current job are scored."""
        job = self.current
        assert job is not None
        self.done[job.key] += edits
        if self.style == "lines":
            elapsed = duration(self.clock() - self.started)
            self._say(
                f"{self._position()} {job.label}: {self.done[job.key]}/{job.edits} edits; "
                f"run {self.finished}/{self.total}; elapsed {elapsed}; ETA {self.eta()}"
            )
        if self._bar is not None:
            self._bar.update(edits)
        if self._overall is not None:
            self._overall.update(edits)
        self._refresh()

    def finish_job(self) -> None:
        self._close_bar()
        self.current = None
        self._refresh()

    def close(self) -> None:
        self._close_bar()
        if self._overall is not None:
            self._overall.close()
            self._overall = None

    # -- showing ----------------------------------------------------------------------------

    def _say(self, line: str) -> None:
        if self._overall is not None:
            tqdm.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def _new_bar(self, desc: str, *, unit: str, total: int, initial: int = 0) -> tqdm:
        """A bar under the overall one. An edit bar shows the ETA from the rows (its postfix), not
        tqdm's from the clock; a bar of scoring requests, which no row times, shows tqdm's."""
        shown = "{elapsed}<{remaining}" if unit != "edit" else "{elapsed}{postfix}"
        return tqdm(
            total=total,
            initial=initial,
            desc=desc,
            unit=unit,
            file=self.stream,
            dynamic_ncols=True,
            position=1,
            leave=False,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} " + unit + "s [" + shown + "]",
        )

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _refresh(self) -> None:
        """(bars) The overall bar's postfix: where the run is and the ETA from the rows."""
        if self._overall is None:
            return
        job = self.current
        where = f", {self._position()}" if job is not None else ""
        left = self.total - self.finished
        self._overall.set_postfix_str(
            f"{left} left{where}, ETA {self.eta()}" if left else "done", refresh=True
        )
        if job is not None and self._bar is not None and self._bar.unit == "edit":
            left = {job.key: job.edits - self.done[job.key]}
            self._bar.set_postfix_str(f"ETA {self.estimator.remaining(left)}", refresh=True)
