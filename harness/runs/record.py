"""A run directory read back for analysis: its manifest, summary and rows, and per job the cases it
edited with the hyperparameters and seeds it used, so that an analysis can apply any of its edits
again exactly as the run did (`harness analyze` does, for the weight change and the generations).

The cases are re-read and re-scheduled from the recorded config through the same planner and
scheduler as the run, so a case is handed to `apply` as it was then (chat template included) and
seeded by `case_seed(seed, case_id)` as the executor seeds it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.ground import EditCase, Method
from harness.runs.catalog import Catalog
from harness.runs.executor import handed_cases
from harness.runs.plan import RunConfig, build_plan, effective_config
from harness.runs.schedule import schedule
from harness.runs.store import RunStore
from harness.schemas import read_json
from harness.seeding import case_seed


@dataclass(frozen=True)
class RecordedJob:
    """One job of a run as it ran: `key`, `model`, `method`, `mode` and `hparams` (the resolved
    values the manifest records) and `cases`, (task, case) pairs in editing order, those left out
    of the job (`skipped` in the manifest) excluded."""

    key: str
    model: str
    method: str
    mode: str
    hparams: Mapping[str, Any]
    cases: tuple[tuple[str, EditCase], ...]


@dataclass(frozen=True)
class RunRecord:
    """A run directory read back (`open_run`): `root`, `manifest`, `summary` (None while a run has
    none), `rows` (cases.jsonl) and `jobs` (the jobs that started, with their cases)."""

    root: Path
    manifest: Mapping[str, Any]
    summary: Mapping[str, Any] | None
    rows: tuple[Mapping[str, Any], ...]
    jobs: tuple[RecordedJob, ...]
    catalog: Catalog

    @property
    def seed(self) -> int:
        return int(self.manifest.get("seed", 0))

    def method(self, name: str) -> Method:
        """A fresh instance of the run's method `name`, from the installed plugins."""
        return self.catalog.method(name)

    def edit_seed(self, case_id: str) -> int:
        """The seed the run set before editing the step that starts with `case_id`."""
        return case_seed(self.seed, case_id)

    def handed(self, cases: Iterable[EditCase], method: Method, handle: Any) -> list[EditCase]:
        """`cases` as the run handed them to `method.apply` on `handle` (chat template applied
        where the run applied it)."""
        chat_template = bool(self.manifest.get("config", {}).get("chat_template", False))
        return handed_cases(cases, method, handle, chat_template=chat_template)


def read_run(run_dir: str | Path, catalog: Catalog) -> RunRecord:
    """Read the run directory `run_dir`; its jobs' cases come from the data the config names, read
    again through `catalog`'s tasks. Raises HarnessError for a folder that is no run directory
    (no manifest), a config this harness cannot read, or data that is no longer where the config
    says (the message names what is missing)."""
    store = RunStore(run_dir)
    manifest = store.read_manifest()
    summary = read_json(store.summary_path) if store.summary_path.exists() else None
    config = RunConfig.from_json(manifest.get("config", {}))
    config, suite = effective_config(config, catalog)
    recorded = manifest.get("jobs", {})
    jobs = []
    for planned in schedule(build_plan(config, catalog, suite), config, catalog, warn=lambda _: None):
        record = recorded.get(planned.job.key, {})
        if "hparams" not in record:
            continue  # never started: nothing of it to analyse
        skipped = set(record.get("skipped", {}))
        cases = tuple((t.task, t.case) for t in planned.ordered if t.case.case_id not in skipped)
        job = planned.job
        jobs.append(RecordedJob(job.key, job.model, job.method, job.mode, dict(record["hparams"]), cases))
    return RunRecord(Path(run_dir), manifest, summary, tuple(store.rows()), tuple(jobs), catalog)
