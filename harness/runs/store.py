"""The run directory: manifest.json, cases.jsonl and summary.json (layout fixed by DESIGN.md).

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
from typing import Any

from harness.api import HarnessError
from harness.cache import atomic_write_bytes

MANIFEST = "manifest.json"
CASES = "cases.jsonl"
SUMMARY = "summary.json"

#: The fields that identify a row: one row per job, task, case and protocol.
RowKey = tuple[str, str, str, str]


def row_key(row: Mapping[str, Any]) -> RowKey:
    return (row["job"], row["task"], row["case_id"], row["protocol"])


def dump_json(data: Any) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


class RunStore:
    """One run directory, opened for writing (fresh, or resumed)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.cases_path = self.root / CASES
        self.manifest_path = self.root / MANIFEST
        self.summary_path = self.root / SUMMARY

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

    def write_manifest(self, manifest: Mapping[str, Any]) -> None:
        atomic_write_bytes(self.manifest_path, dump_json(manifest))

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
