"""The run directory: manifest.json, cases.jsonl and summary.json (layout fixed by DESIGN.md).

The manifest is written only through the store's `record_*` calls, one per event of a run (start,
a job planned, started and finished, a model loaded, ...), each of which rewrites manifest.json
atomically; its layout lives here and nowhere else.

cases.jsonl is the source of truth: each scored case is one line, written and fsync'ed before
the next case starts, so a run killed at any moment (SIGKILL, power cut) keeps every finished
case. A half-written last line is what such a kill can leave; reading skips it and the next
append truncates it away, so a resumed run neither redoes nor loses a case.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.cache import atomic_write_bytes
from harness.ground import HarnessError
from harness.runs.provenance import now

if TYPE_CHECKING:
    from harness.models.handle import ModelHandle
    from harness.runs.plan import Job

MANIFEST = "manifest.json"
CASES = "cases.jsonl"
SUMMARY = "summary.json"

#: The fields that identify a row: one row per job, task, case and protocol.
RowKey = tuple[str, str, str, str]

#: How a run can end: every case done; stopped by the user (Ctrl-C) or a kill, to be resumed; or
#: stopped by an error, which the manifest records. A run that is going says "running".
END_STATUSES = ("finished", "interrupted", "failed")


def error_line(error: Mapping[str, str]) -> str:
    """A recorded error (`RunStore.record_end`) as one line: its type and the first line of its
    message."""
    message = error.get("message", "").strip().splitlines()
    return f"{error.get('type', 'error')}: {message[0]}" if message else error.get("type", "error")


def row_key(row: Mapping[str, Any]) -> RowKey:
    return (row["job"], row["task"], row["case_id"], row["protocol"])


def dump_json(data: Any) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def model_record(handle: ModelHandle, *, load_s: float) -> dict[str, Any]:
    """What the manifest keeps of a loaded model: what identifies its weights, where it came from
    and runs, and how long it took to load (seconds)."""
    return {
        "fingerprint": handle.fingerprint(),
        "source": handle.source,
        "device": str(handle.device),
        "dtype": str(handle.dtype).removeprefix("torch."),
        "family": handle.adapter.family,
        "load_s": round(load_s, 3),
    }


class RunStore:
    """One run directory, opened for writing (fresh, or resumed)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.cases_path = self.root / CASES
        self.manifest_path = self.root / MANIFEST
        self.summary_path = self.root / SUMMARY
        self._manifest: dict[str, Any] = {}

    def create(self, *, resume: bool) -> None:
        """Make the folder; a fresh run refuses a folder that already holds results."""
        if not resume and self.cases_path.exists() and self.cases_path.stat().st_size:
            raise HarnessError(
                f"{self.root} already holds a run; pass --resume to continue it, or choose another --out"
            )
        if resume and not self.manifest_path.exists():
            raise HarnessError(f"nothing to resume in {self.root}: it has no {MANIFEST}")
        self.root.mkdir(parents=True, exist_ok=True)
        self._drop_partial_line()

    # -- manifest ---------------------------------------------------------------------------

    def read_manifest(self) -> dict[str, Any]:
        try:
            return json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise HarnessError(f"{self.root} is not a run directory: it has no {MANIFEST}") from None
        except json.JSONDecodeError as exc:
            raise HarnessError(f"{self.manifest_path}: invalid JSON ({exc})") from None

    def _save(self) -> None:
        atomic_write_bytes(self.manifest_path, dump_json(self._manifest))

    def record_start(
        self,
        config: Mapping[str, Any],
        seed: int,
        *,
        resume: bool,
        versions: Mapping[str, Any],
        machine: Mapping[str, Any],
    ) -> None:
        """Open the folder (`create`) and mark the run as running: a fresh manifest holds the
        effective config and seed; a resumed one keeps its own and notes the resumption."""
        self.create(resume=resume)
        if resume:
            self._manifest = self.read_manifest()
            self._manifest.setdefault("resumed", []).append(now())
        else:
            self._manifest = {"config": dict(config), "seed": seed, "started": now(), "jobs": {}}
        self._manifest.update(status="running", versions=dict(versions), machine=dict(machine))
        for stale in ("ended", "cases", "error"):
            self._manifest.pop(stale, None)
        self._save()

    def record_end(
        self,
        status: str,
        *,
        cases: Mapping[str, int] | None = None,
        error: Mapping[str, str] | None = None,
    ) -> None:
        """The run ended, with one of `END_STATUSES` and the end time; `cases` counts the cases
        saved of those planned (`{"saved": n, "planned": m}`), `error` describes what made a
        "failed" run stop (`type`, `message`, `traceback`)."""
        if status not in END_STATUSES:
            raise ValueError(f"a run ends {', '.join(END_STATUSES)}, not {status!r}")
        self._manifest.update(status=status, ended=now())
        if cases is not None:
            self._manifest["cases"] = dict(cases)
        if error is not None:
            self._manifest["error"] = dict(error)
        self._save()

    def ending(self) -> dict[str, Any]:
        """How the run ended, for summary.json: its status, the case counts, and (failed) the error
        as one line; empty while the run is going."""
        if self._manifest.get("status") not in END_STATUSES:
            return {}
        ending = {key: self._manifest[key] for key in ("status", "cases") if key in self._manifest}
        if "error" in self._manifest:
            ending["error"] = error_line(self._manifest["error"])
        return ending

    def record_job(self, job: Job, *, n_cases: int) -> None:
        """A planned job (whether or not it runs now); a resumed run keeps its times and hparams."""
        record = self._manifest.setdefault("jobs", {}).setdefault(job.key, {})
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
        self._save()

    def record_skipped(self, job: Job, problems: Mapping[str, str]) -> None:
        """Cases left out of a job once it was planned (case id -> why)."""
        self._manifest["jobs"][job.key].setdefault("skipped", {}).update(problems)
        self._save()

    def record_notes(self, job: Job, notes: Mapping[str, str]) -> None:
        """What the job's method noted on cases it edits all the same (case id -> note, from
        `Method.case_note`)."""
        self._manifest["jobs"][job.key].setdefault("notes", {}).update(notes)
        self._save()

    def record_job_started(self, job: Job, hparams: Mapping[str, Any]) -> None:
        """The job's resolved hyperparameters; its start time is that of its first session."""
        record = self._manifest["jobs"][job.key]
        record["hparams"] = dict(hparams)
        record.setdefault("started", now())
        self._save()

    def record_job_finished(self, job: Job) -> None:
        self._manifest["jobs"][job.key]["finished"] = now()
        self._save()

    def record_model(self, name: str, handle: ModelHandle, *, load_s: float) -> None:
        """A loaded model: what identifies its weights, where it came from and runs."""
        self.record_loaded_model(name, model_record(handle, load_s=load_s))

    def record_loaded_model(self, name: str, record: Mapping[str, Any]) -> None:
        """A loaded model's `model_record`, made where it loaded (a Ray worker's, on the driver)."""
        self._manifest.setdefault("models", {})[name] = dict(record)
        self._save()

    def record_evaluation(self, task: str, settings: Mapping[str, Any]) -> None:
        """The evaluator settings a task's cases are scored with."""
        self._manifest.setdefault("evaluation", {})[task] = dict(settings)
        self._save()

    def record_general(self, job: Job, record: Mapping[str, Any]) -> None:
        """The general-capability figures of a job (see harness.runs.general)."""
        self._manifest.setdefault("general", {})[job.key] = dict(record)
        self._save()

    def general_records(self) -> dict[str, Any]:
        """Job key -> its general-capability record, from this session or an earlier one."""
        return dict(self._manifest.get("general", {}))

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        atomic_write_bytes(self.summary_path, dump_json(summary))

    # -- cases ------------------------------------------------------------------------------

    def rows(self) -> Iterator[dict[str, Any]]:
        """Every complete row; a truncated last line (a killed write) is skipped."""
        if not self.cases_path.exists():
            return
        with self.cases_path.open("rb") as f:
            lines = f.read().split(b"\n")
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                if number == len(lines):
                    return
                raise HarnessError(f"{self.cases_path}: line {number} is not valid JSON") from None

    def done(self) -> set[RowKey]:
        return {row_key(row) for row in self.rows()}

    def append(self, row: Mapping[str, Any]) -> None:
        """Write one row and make it durable before returning."""
        line = json.dumps(row, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"
        with self.cases_path.open("ab") as f:
            f.write(line.encode())
            f.flush()
            os.fsync(f.fileno())

    def _drop_partial_line(self) -> None:
        """Cut a half-written last line, so the next append starts on a line of its own."""
        if not self.cases_path.exists():
            return
        data = self.cases_path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end != len(data):
            with self.cases_path.open("r+b") as f:
                f.truncate(end)
                os.fsync(f.fileno())
