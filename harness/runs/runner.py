"""One run from start to summary: plan, open the run directory, execute, summarize.

This is the API under `harness run` (and what a notebook or a test calls): everything that can be
refused is refused by `build_plan` and `schedule` before the run directory is touched or a model
is loaded.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from harness.ground import MetricInfo
from harness.runs.catalog import Catalog
from harness.runs.executor import Executor
from harness.runs.general import GeneralCheck, summary_view
from harness.runs.plan import Job, RunConfig, build_plan, effective_config, metric_info
from harness.runs.provenance import machine, versions
from harness.runs.schedule import Warn, schedule, warn_stderr
from harness.runs.store import RunStore
from harness.runs.summary import summarize


@dataclass
class RunOutcome:
    config: RunConfig
    jobs: list[Job]
    summary: dict[str, Any]
    store: RunStore


def plan(config: RunConfig, catalog: Catalog) -> tuple[RunConfig, list[Job]]:
    """The effective config and its jobs; raises PlanError for an impossible request."""
    config, suite = effective_config(config, catalog)
    return config, build_plan(config, catalog, suite)


def _general_check(config: RunConfig) -> GeneralCheck | None:
    if not config.general:
        return None
    return GeneralCheck(config.general, config.general_include, config.general_limit, config.seed)


def write_summary(
    store: RunStore, jobs: list[Job], metric_info: Mapping[str, MetricInfo] | None = None
) -> dict[str, Any]:
    """summary.json from the rows of cases.jsonl and the planned jobs (and their general checks),
    with what the run's metrics mean (`metric_info`)."""
    general = {key: summary_view(record) for key, record in store.general_records().items()}
    summary = summarize(store.rows(), jobs, general, metric_info)
    store.write_summary(summary)
    return summary


def execute(
    config: RunConfig,
    out: str | os.PathLike[str],
    *,
    resume: bool = False,
    device: str = "auto",
    catalog: Catalog,
    progress: bool = True,
    warn: Warn = warn_stderr,
) -> RunOutcome:
    """Run (or, with `resume`, continue) a run in the folder `out`.

    When resuming, the config is the one recorded in the folder's manifest, so the rebuilt plan is
    the one the killed run was executing; `config` is then ignored. `catalog` is made over the
    registry the caller built (`Catalog(get_registry())` at the command layer).
    """
    store = RunStore(out)
    if resume:
        config = RunConfig.from_json(store.read_manifest()["config"])
    config, jobs = plan(config, catalog)
    schedules = schedule(jobs, config, catalog, warn)
    store.record_start(
        config.to_json(), config.seed, resume=resume, versions=versions(catalog.registry), machine=machine()
    )
    executor = Executor(
        config,
        schedules,
        store,
        catalog,
        device=device,
        progress=progress,
        warn=warn,
        general=_general_check(config),
    )
    status = "interrupted"
    try:
        executor.run()
        status = "finished"
    finally:
        store.record_end(status)
        summary = write_summary(store, jobs, metric_info(catalog, config))
    return RunOutcome(config, jobs, summary, store)
