"""One run from start to summary: plan, open the run directory, execute, summarize.

This is the API under `harness run` (and what a notebook or a test calls): everything that can be
refused is refused by `plan` and `schedule` before the run directory is touched or a model is
loaded, so a run that cannot start leaves nothing behind. Once the directory exists, the run ends
in one of three ways, each recorded in the manifest and the summary: `finished`; `interrupted`
(Ctrl-C: `RunInterrupted`, a KeyboardInterrupt that says where the run stopped); or `failed`
(any other error: `RunFailed`, with the error and its traceback in the manifest). Both of the
latter keep every case saved so far, and `harness run --resume RUN_DIR` continues from there.
"""

from __future__ import annotations

import os
import shlex
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.ground import HarnessError, MetricInfo
from harness.runs import modes
from harness.runs.catalog import Catalog
from harness.runs.executor import Executor
from harness.runs.general import GeneralCheck, summary_view
from harness.runs.plan import Job, PlanError, RunConfig, build_plan, effective_config, metric_info
from harness.runs.progress import Style
from harness.runs.provenance import machine, versions
from harness.runs.schedule import JobSchedule, Warn, schedule, warn_stderr
from harness.runs.store import RunStore
from harness.runs.summary import summarize

if TYPE_CHECKING:
    from harness.runs.ray_executor import RayOptions


@dataclass
class RunOutcome:
    config: RunConfig
    jobs: list[Job]
    summary: dict[str, Any]
    store: RunStore


@dataclass(frozen=True)
class RunState:
    """Where a run stopped: its folder, and the cases saved of those planned (a case counts once,
    when its own edit has been scored)."""

    root: Path
    saved: int
    planned: int

    def resume_command(self) -> str:
        return f"harness run --resume {shlex.quote(str(self.root))}"

    def counts(self) -> dict[str, int]:
        return {"saved": self.saved, "planned": self.planned}


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the run; the run directory is marked `interrupted` and resumable. A
    KeyboardInterrupt, so code that catches that still does; `str()` says where the run is."""

    def __init__(self, state: RunState) -> None:
        super().__init__(
            f"interrupted: {state.saved} of {state.planned} cases are saved in {state.root}; "
            f"continue the run with: {state.resume_command()}"
        )
        self.state = state


class RunFailed(HarnessError):
    """An error stopped the run after its directory was made; the directory is marked `failed`,
    with the error and its traceback in manifest.json. The error itself is the `__cause__`."""

    def __init__(self, error: BaseException, state: RunState) -> None:
        cause = str(error) if isinstance(error, HarnessError) else f"{type(error).__name__}: {error}"
        super().__init__(
            f"{cause}\nThe run stopped with {state.saved} of {state.planned} cases saved in "
            f"{state.root}, now marked failed (traceback in its manifest.json). Once the cause is "
            f"fixed, if it lies outside the run's config (memory, a data or model file, a plugin's "
            f"code), `{state.resume_command()}` continues with the saved cases; a cause in the "
            "config needs a new run."
        )
        self.state = state


def plan(config: RunConfig, catalog: Catalog) -> tuple[RunConfig, list[Job]]:
    """The effective config and its jobs; raises PlanError (a HarnessError) for an impossible
    request, and HarnessError for a folder or general-capability task that cannot be had. Nothing
    is loaded, but lm-eval builds the `--general` tasks (reading their documents)."""
    config, suite = effective_config(config, catalog)
    jobs = build_plan(config, catalog, suite)
    check_sources(config, catalog)
    return config, jobs


def check_sources(config: RunConfig, catalog: Catalog) -> None:
    """Refuse, before any model loads, what the run would read and cannot: a model path that holds
    no model (`check_location`), a `--data-dir` that is no folder, and `--general` tasks that
    lm-eval cannot build (checked last: it imports lm-eval)."""
    from harness.models.shape import check_location

    alias = catalog.registry.models.locate(config.model)
    check_location(alias[0] if alias else config.model)
    if config.data_dir is not None and not Path(config.data_dir).is_dir():
        raise PlanError(f"--data-dir {config.data_dir}: no such folder")
    general = _general_check(config)
    if general is not None:
        general.check()


def _general_check(config: RunConfig) -> GeneralCheck | None:
    if not config.general:
        return None
    return GeneralCheck(
        config.general, config.general_include, config.general_limit, config.seed, config.chat_template
    )


def write_summary(
    store: RunStore, jobs: list[Job], metric_info: Mapping[str, MetricInfo] | None = None
) -> dict[str, Any]:
    """summary.json from the rows of cases.jsonl and the planned jobs (and their general checks),
    with what the run's metrics mean (`metric_info`) and, once the run has ended, how it ended
    (`status`, `cases`, and a failed run's `error`)."""
    general = {key: summary_view(record) for key, record in store.general_records().items()}
    summary = {**summarize(store.rows(), jobs, general, metric_info), **store.ending()}
    store.write_summary(summary)
    return summary


def run_state(store: RunStore, schedules: Sequence[JobSchedule]) -> RunState:
    """The cases saved in `store` of those the schedules plan (rows of the `immediate` protocol:
    one per edited case, whatever the mode)."""
    planned = {
        key
        for s in schedules
        for step in s.steps
        for protocol, tagged in step.score
        if protocol == modes.IMMEDIATE
        for key in (s.row_key(t, protocol) for t in tagged)
    }
    return RunState(store.root, len(planned & store.done()), len(planned))


def _error_record(error: BaseException) -> dict[str, str]:
    return {
        "type": type(error).__name__,
        "message": str(error),
        "traceback": "".join(traceback.format_exception(error)),
    }


def execute(
    config: RunConfig,
    out: str | os.PathLike[str],
    *,
    resume: bool = False,
    device: str = "auto",
    catalog: Catalog,
    progress: bool | Style = True,
    warn: Warn = warn_stderr,
    cluster: RayOptions | None = None,
) -> RunOutcome:
    """Run (or, with `resume`, continue) a run in the folder `out`.

    `cluster` runs the jobs on a Ray cluster (`harness.runs.ray_executor`, docs/ray.md); without
    it they run in this process, and Ray is not imported.

    When resuming, the config is the one recorded in the folder's manifest, so the rebuilt plan is
    the one the killed run was executing; `config` is then ignored. `catalog` is made over the
    registry the caller built (`Catalog(get_registry())` at the command layer).

    Raises HarnessError for a request refused before the folder is touched; once it is, Ctrl-C
    raises `RunInterrupted` and any other error `RunFailed`, after the manifest and summary say so.
    """
    store = RunStore(out)
    if resume:
        config = RunConfig.from_json(store.read_manifest()["config"])
    config, jobs = plan(config, catalog)
    schedules = schedule(jobs, config, catalog, warn)
    options = {"device": device, "progress": progress, "warn": warn, "general": _general_check(config)}
    if cluster is None:
        executor = Executor(config, schedules, store, catalog, **options)
    else:
        from harness.runs.ray_executor import RayExecutor

        executor = RayExecutor(config, schedules, store, catalog, options=cluster, **options)
        executor.connect()  # a job that fits on no worker is refused before the folder is touched
    store.record_start(
        config.to_json(), config.seed, resume=resume, versions=versions(catalog.registry), machine=machine()
    )

    def end(status: str, error: BaseException | None = None) -> tuple[RunState, dict[str, Any]]:
        """Record how the run ended, then write the summary that says so."""
        state = run_state(store, executor.schedules)
        record = None if error is None else _error_record(error)
        store.record_end(status, cases=state.counts(), error=record)
        return state, write_summary(store, jobs, metric_info(catalog, config))

    try:
        executor.run()
    except KeyboardInterrupt:
        raise RunInterrupted(end("interrupted")[0]) from None
    except Exception as exc:
        raise RunFailed(exc, end("failed", exc)[0]) from exc
    return RunOutcome(config, jobs, end("finished")[1], store)
