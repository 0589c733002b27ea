"""One run from start to summary: plan, open the run directory, execute, summarize.

This is the API under `harness run` (and what a notebook or a test calls): everything that can be
refused is refused by `build_plan` before the run directory is touched or a model is loaded.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from harness.runs.catalog import Catalog
from harness.runs.executor import Executor, Warn, _warn_stderr
from harness.runs.general import GeneralCheck, summary_view
from harness.runs.plan import Job, RunConfig, build_plan, effective_config
from harness.runs.provenance import machine, now, versions
from harness.runs.store import RunStore
from harness.runs.summary import summarize


@dataclass
class RunOutcome:
    config: RunConfig
    jobs: list[Job]
    summary: dict[str, Any]
    store: RunStore


def plan(config: RunConfig, catalog: Catalog | None = None) -> tuple[RunConfig, list[Job]]:
    """The effective config and its jobs; raises PlanError for an impossible request."""
    catalog = catalog or Catalog()
    config, suite = effective_config(config, catalog)
    return config, build_plan(config, catalog, suite)


def _general_check(config: RunConfig) -> GeneralCheck | None:
    if not config.general:
        return None
    return GeneralCheck(config.general, config.general_include, config.general_limit, config.seed)


def write_summary(store: RunStore, manifest: Mapping[str, Any], jobs: list[Job]) -> dict[str, Any]:
    general = {key: summary_view(record) for key, record in manifest.get("general", {}).items()}
    records = [manifest["jobs"][j.key] for j in jobs if j.key in manifest.get("jobs", {})]
    summary = summarize(store.rows(), records, general)
    store.write_summary(summary)
    return summary


def execute(
    config: RunConfig,
    out: str | os.PathLike[str],
    *,
    resume: bool = False,
    device: str = "auto",
    catalog: Catalog | None = None,
    progress: bool = True,
    warn: Warn = _warn_stderr,
) -> RunOutcome:
    """Run (or, with `resume`, continue) a run in the folder `out`.

    When resuming, the config is the one recorded in the folder's manifest, so the rebuilt plan is
    the one the killed run was executing; `config` is then ignored.
    """
    catalog = catalog or Catalog()
    store = RunStore(out)
    if resume:
        manifest = store.read_manifest()
        config = RunConfig.from_json(manifest["config"])
    config, jobs = plan(config, catalog)
    store.create(resume=resume)
    if resume:
        manifest.setdefault("resumed", []).append(now())
    else:
        manifest = {"config": config.to_json(), "seed": config.seed, "started": now(), "jobs": {}}
    manifest.update(status="running", versions=versions(catalog.registry), machine=machine())
    manifest.pop("ended", None)
    store.write_manifest(manifest)
    executor = Executor(
        config,
        jobs,
        store,
        catalog,
        manifest=manifest,
        device=device,
        progress=progress,
        warn=warn,
        general=_general_check(config),
    )
    try:
        executor.run()
        manifest["status"] = "finished"
    except BaseException:
        manifest["status"] = "interrupted"
        raise
    finally:
        manifest["ended"] = now()
        store.write_manifest(manifest)
        summary = write_summary(store, manifest, jobs)
    return RunOutcome(config, jobs, summary, store)
