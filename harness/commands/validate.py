"""`harness validate`: check a data file against a task's record format, or a dataset spec.

Without `--task` the format is inferred: the file is checked against the record format of every
registered task and the one it fits is named, so a user learns both whether the file is valid and
which task reads it.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from harness.ground import HarnessError, RecordIssue
from harness.plugins import Registry, TaskKind, get_registry
from harness.schemas import (
    SHOWN_ISSUES,
    DataFileError,
    check_task_file,
    format_issues,
    load_schema,
    read_json,
    validate_document,
)

DATASET_SPEC = "dataset-spec"
#: How many leading records format inference screens every format with.
SAMPLE_SIZE = 20


@dataclass(frozen=True)
class Verdict:
    """The outcome of checking one file: what it was taken to be, and its problems."""

    kind: str
    issues: list[RecordIssue]
    note: str = ""


def _check_with_task(tasks: TaskKind, task: str, path: str) -> list[RecordIssue]:
    """Problems of `path` for a registered task, or for the task a dataset spec path describes."""
    return check_task_file(tasks.resolve(task), path)


def _declared_fields(record_format: str, which: str = "properties") -> set[str]:
    """Top-level fields a shipped format's schema names (`which`: "properties", or "required" for
    those it requires); empty for a plugin's own format."""
    try:
        return set(load_schema(record_format).get(which, ()))
    except HarnessError:
        return set()


def _screen(tasks: TaskKind, formats: dict[str, list[str]], path: str, data: Any) -> dict[str, int]:
    """Invalid records per format on the first records only: a cheap way to rule most formats out.
    A problem of the whole file (a shape the format does not read) makes every record invalid.

    Data that is not a long list (a format may keep its records under keys of an object, as
    Sanitation does) is screened whole."""
    screened = len(data[:SAMPLE_SIZE]) if isinstance(data, list) else 1

    def invalid(issues: list[RecordIssue]) -> int:
        records = {issue.index for issue in issues}
        return screened if None in records else len(records)

    def problems(file: str) -> dict[str, int]:
        return {fmt: invalid(_check_with_task(tasks, names[0], file)) for fmt, names in formats.items()}

    if not isinstance(data, list) or len(data) <= SAMPLE_SIZE:
        return problems(path)
    with tempfile.TemporaryDirectory() as folder:
        sample = Path(folder) / "sample.json"
        sample.write_text(json.dumps(data[:SAMPLE_SIZE]), encoding="utf-8")
        return problems(str(sample))


def _infer(tasks: TaskKind, path: str, data: Any) -> Verdict:
    """Check against the format that fits best: fewest invalid records on a sample, then the format
    whose schema names most of the records' fields (ZsRE records also fit the looser fact formats),
    then the one that requires most of them (the stricter format the records are written for)."""
    formats = tasks.formats()
    if not formats:
        return Verdict("records", [RecordIssue(path, None, "", "no registered task to check against")])
    screened = _screen(tasks, formats, path, data)
    records = data[:SAMPLE_SIZE] if isinstance(data, list) else [data]
    present = [set(r) for r in records if isinstance(r, dict)]
    coverage = {fmt: sum(len(fields & _declared_fields(fmt)) for fields in present) for fmt in formats}
    required = {
        fmt: sum(len(fields & _declared_fields(fmt, "required")) for fields in present) for fmt in formats
    }
    ranked = sorted(formats, key=lambda fmt: (screened[fmt], -coverage[fmt], -required[fmt]))
    best = ranked[0]
    issues = _check_with_task(tasks, formats[best][0], path)
    label = f"records in format {best!r} (tasks: {', '.join(sorted(formats[best]))})"
    if issues:
        note = f"fits no registered format; closest is {label} (pass --task NAME to choose)"
        return Verdict(label, issues, note)
    also = [fmt for fmt in ranked[1:] if screened[fmt] == 0]
    others = f"; the first records also fit {', '.join(map(repr, also))}" if also else ""
    return Verdict(label, [], f"inferred {label}{others}")


def _fits_instead(tasks: TaskKind, task: str, path: str, issues: list[RecordIssue]) -> str:
    """For a file none of whose records is valid for `task`: the other registered formats the whole
    file fits, as a hint (a MEND-style zsRE file given to `--task zsre`), or "". A file with some
    valid records gets no hint: it is in the task's format, with faults (and may well fit a looser
    format, which would mislead)."""
    try:
        data = read_json(path)
    except DataFileError:
        return ""
    invalid = {issue.index for issue in issues}
    if isinstance(data, list) and len(invalid - {None}) < len(data):
        return ""
    own = tasks.resolve(task).record_format
    formats = {fmt: names for fmt, names in tasks.formats().items() if fmt != own}
    screened = _screen(tasks, formats, path, data)
    fitting = [
        fmt for fmt in formats if not screened[fmt] and not _check_with_task(tasks, formats[fmt][0], path)
    ]
    if not fitting:
        return ""
    named = " or ".join(
        f"format {fmt!r} (--task {' or --task '.join(sorted(formats[fmt]))})" for fmt in fitting
    )
    return f"these are not records of task {task!r}, but every record fits {named}: did you mean that?"


def _is_spec(data: Any) -> bool:
    return isinstance(data, dict) and "files" in data


def check(path: str, task: str | None, registry: Registry) -> Verdict:
    """Check one file: against `task`'s record format, as a dataset spec, or by inference."""
    if task is not None:
        issues = _check_with_task(registry.tasks, task, path)
        return Verdict(
            f"records of task {task!r}",
            issues,
            _fits_instead(registry.tasks, task, path, issues) if issues else "",
        )
    try:
        data = read_json(path)
    except DataFileError as exc:
        return Verdict("file", [RecordIssue(path, None, "", exc.reason)])
    if _is_spec(data):
        return _check_spec(registry.tasks, data, path)
    return _infer(registry.tasks, path, data)


def _check_spec(tasks: TaskKind, spec: dict, path: str) -> Verdict:
    """A dataset spec is valid when it fits its schema and every data file it names fits its format."""
    issues = validate_document(spec, DATASET_SPEC, path)
    if issues:
        return Verdict("dataset spec", issues)
    task = tasks.from_spec(path)
    folder = Path(path).parent
    for relative in spec["files"].values():
        issues.extend(check_task_file(task, folder / relative))
    count = len(spec["files"])
    return Verdict(f"dataset spec ({count} data file{'' if count == 1 else 's'} checked)", issues)


@click.command("validate")
@click.argument("file")
@click.option("--task", "task", metavar="NAME", help="Check against this task's record format (or a spec's).")
@click.option("--all", "show_all", is_flag=True, help="Print every problem, not only the first ten.")
@click.pass_context
def command(ctx: click.Context, file: str, task: str | None, show_all: bool) -> None:
    """Check FILE: a data file (a JSON list or JSON Lines) or a dataset spec.

    Exits 0 when valid and 1 when not; each problem names the file, the record (counted from 0)
    and the JSON path inside it.
    """
    verdict = check(file, task, get_registry())
    if verdict.note:
        click.echo(f"{file}: {verdict.note}", err=True)
    if not verdict.issues:
        click.echo(f"{file}: valid {verdict.kind}")
        return
    click.echo(format_issues(verdict.issues, limit=len(verdict.issues) if show_all else SHOWN_ISSUES))
    records = {issue.index for issue in verdict.issues if issue.index is not None}
    if records:
        problems = _plural(len(verdict.issues), "problem")
        click.echo(f"{file}: invalid, {problems} in {_plural(len(records), 'record')}", err=True)
    ctx.exit(1)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
