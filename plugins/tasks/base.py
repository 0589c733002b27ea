"""The loader every built-in task shares: find the file, validate every record, normalize.

A subclass says where its files live (`files`), which schema its records follow
(`record_format`) and how one valid record becomes edit cases (`to_cases`). Validation happens on
the whole file before any record is normalized, so a bad record stops a run before any edit.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from harness.api import (
    DataFile,
    DatasetSpec,
    EditCase,
    HarnessError,
    LoadedCases,
    RecordIssue,
    Task,
    find_data_file,
    format_issues,
    not_found_message,
    read_json_records,
    validate_records,
)

log = logging.getLogger(__name__)

KNOWEDIT_HUB = "zjunlp/KnowEdit"
#: The metrics of fact edits (reliability, rephrases, portability and locality probes, fluency).
FACT_METRICS = ("edit_succ", "generalization", "portability", "locality", "fluency")

#: Maps a canonical field (`prompt`, `portability.reasoning`, ...) to the user's field name.
FieldMap = Mapping[str, Any]


def knowedit_file(local: str, hub: str | None = None, *aliases: str) -> DataFile:
    """A KnowEdit file: `local` in the offline layout, `benchmark/<hub>` on the hub.

    A data directory holding a hub snapshot (with its `benchmark/` folder) works as well.
    """
    hub_path = f"benchmark/{hub or local}"
    return DataFile(local=(local, *aliases, hub_path), hub_repo=KNOWEDIT_HUB, hub_path=hub_path)


class RecordTask(Task):
    """A task whose data is one JSON (or JSON Lines) file of records per split.

    `files` (split -> DataFile) is where the published files live; an instance made with
    `paths` (split -> file) reads those files instead, which is how dataset specs reuse a format.
    `fallback_split` names the split used, with a logged note, when a split's file is nowhere.
    """

    files: ClassVar[Mapping[str, DataFile]] = {}
    fallback_split: ClassVar[Mapping[str, str]] = {}

    def __init__(
        self,
        *,
        paths: Mapping[str, str | os.PathLike[str]] | None = None,
        name: str | None = None,
        metrics: Sequence[str] | None = None,
        field_map: FieldMap | None = None,
    ) -> None:
        self.paths = {split: Path(p) for split, p in (paths or {}).items()}
        if name is not None:
            self.name = name
        if metrics is not None:
            self.metrics = tuple(metrics)
        if paths is not None:
            self.splits = tuple(self.paths)
        self.field_map = field_map

    @classmethod
    def from_spec(cls, spec: DatasetSpec) -> RecordTask:
        """This format read from a dataset spec's files (after its `fields` mapping, if any)."""
        return cls(paths=spec.files, name=spec.name, metrics=spec.metrics, field_map=spec.fields)

    # -- reading ---------------------------------------------------------------------------

    def locate(self, split: str, data_dir: str | None) -> tuple[Path, str, str]:
        """(file, split actually read, note) for a requested split."""
        if split not in self.splits:
            raise HarnessError(
                f"task {self.name!r} has no split {split!r}; its splits: {', '.join(self.splits)}"
            )
        if split in self.paths:
            return self.paths[split], split, ""
        found, tried = find_data_file(self.files[split], data_dir)
        if found is not None:
            return found, split, ""
        fallback = self.fallback_split.get(split)
        if fallback:
            other, more = find_data_file(self.files[fallback], data_dir)
            if other is not None:
                note = f"the {split} split is not available, so the {fallback} split is used instead"
                log.warning("task %s: %s (%s)", self.name, note, other)
                return other, fallback, note
            tried += more
        raise HarnessError(not_found_message(self.name, tried, self.files[split].obtain))

    def read_records(self, path: Path) -> list[Any]:
        """The records of one file, before validation (a subclass may unpack another shape)."""
        return read_json_records(path)

    def validate(self, records: Sequence[Any], path: Path) -> list[RecordIssue]:
        """Every schema problem of the records read from `path`, indexed by position."""
        return validate_records(records, self.record_format, str(path))

    def remap(self, record: Any) -> Any:
        """The record as this format expects it, after a dataset spec's field mapping."""
        if self.field_map is None or not isinstance(record, Mapping):
            return record
        return apply_field_map(record, self.field_map)

    # -- the contract ----------------------------------------------------------------------

    def check_file(self, path: str) -> list[RecordIssue]:
        from harness.api import DataFileError

        try:
            records = [self.remap(r) for r in self.read_records(Path(path))]
        except DataFileError as exc:
            return [RecordIssue(path, None, "", exc.reason)]
        return self.validate(records, Path(path))

    def load(
        self, *, split: str = "test", data_dir: str | None = None, skip_invalid: bool = False
    ) -> LoadedCases:
        path, used_split, note = self.locate(split, data_dir)
        records = [self.remap(r) for r in self.read_records(path)]
        issues = self.validate(records, path)
        if issues and not skip_invalid:
            raise HarnessError(
                f"task {self.name!r}: {len(issues)} problem(s) in {path} "
                f"(pass --skip-invalid to go on without the bad records):\n{format_issues(issues)}"
            )
        bad = {issue.index for issue in issues}
        cases: list[EditCase] = []
        for index, record in enumerate(records):
            if index not in bad:
                cases.extend(self.to_cases(record, f"{self.name}:{used_split}:{index}"))
        source = f"{path}" + (f" ({note})" if note else "")
        return LoadedCases(cases=tuple(cases), source=source, skipped=tuple(issues))

    def to_cases(self, record: Mapping[str, Any], case_id: str) -> Iterator[EditCase]:
        """The edit cases of one valid record (usually one, with `case_id`)."""
        raise NotImplementedError


def _lookup(record: Mapping[str, Any], dotted: str) -> Any:
    value: Any = record
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def apply_field_map(record: Mapping[str, Any], field_map: FieldMap) -> dict[str, Any]:
    """A user's record rewritten as a KnowEdit fact record (the `wiki_recent` format).

    Plain fields map to a (dotted) source field name. A probe group (`portability.<group>`,
    `locality.<group>`) maps to `{"field": ..., "prompt": ..., "answer": ...}`: the list under
    `field` holds items whose `prompt` and `answer` fields are read. Missing source fields are left
    out, so the format's schema reports them by their canonical name.
    """
    out: dict[str, Any] = {}
    for target, source in field_map.items():
        kind, _, group = target.partition(".")
        if group:
            items = _lookup(record, source["field"])
            if isinstance(items, list):
                prompt_key, answer_key = source.get("prompt", "prompt"), source.get("answer", "ground_truth")
                out.setdefault(kind, {})[group] = [
                    {"prompt": _lookup(i, prompt_key), "ground_truth": _lookup(i, answer_key)}
                    if isinstance(i, Mapping)
                    else i
                    for i in items
                ]
            continue
        value = _lookup(record, source)
        if value is not None:
            out[target] = value
    return out
