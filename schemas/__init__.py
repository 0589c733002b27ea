"""The JSON Schemas (2020-12) shipped with the harness, and the one machinery that reads and
validates input files against them.

This folder is installed as the package `harness.schemas`: the `*.schema.json` files next to this
module are its data (record formats, dataset specs, suites, results). Every reader of user input
(tasks, `harness validate`, suites, the leaderboard) goes through the functions below, so that a
bad file gives the same one-line message, naming file, record and JSON path, wherever it is read.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from harness.ground import HarnessError, RecordIssue, Task

__all__ = [
    "DataFileError",
    "check_records_file",
    "format_issues",
    "json_path",
    "load_schema",
    "read_json",
    "read_json_records",
    "schema_names",
    "validate_document",
    "validate_records",
]

SUFFIX = ".schema.json"
#: How many issues `format_issues` prints before it only counts the rest.
SHOWN_ISSUES = 10
#: The pattern of a string that must not be blank (`editing-common.schema.json`'s text, subject).
BLANK_PATTERN = "\\S"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_JSONL_SUFFIXES = (".jsonl", ".ndjson")


class DataFileError(HarnessError):
    """A file that cannot be read as JSON at all; `reason` is the message without the file name."""

    def __init__(self, file: str, reason: str) -> None:
        super().__init__(f"{file}: {reason}")
        self.file = file
        self.reason = reason


# -- schemas ------------------------------------------------------------------------------------


def schema_names() -> list[str]:
    """Names of the shipped schemas (file names without `.schema.json`)."""
    folder = resources.files(__name__)
    return sorted(e.name[: -len(SUFFIX)] for e in folder.iterdir() if e.name.endswith(SUFFIX))


@cache
def load_schema(name: str) -> dict[str, Any]:
    """The schema `schemas/<name>.schema.json`; an unknown name lists the known ones."""
    resource = resources.files(__name__) / f"{name}{SUFFIX}"
    if not resource.is_file():
        known = ", ".join(schema_names()) or "none"
        raise HarnessError(f"unknown schema {name!r}; known schemas: {known}")
    return json.loads(resource.read_text(encoding="utf-8"))


#: A shipped schema's name, or a schema itself (a third-party task ships its own).
SchemaRef = str | dict[str, Any]


def _retrieve(uri: str) -> Any:
    """Resolve a `$ref` to a sibling file (`answers.schema.json#/$defs/...`) among shipped schemas."""
    from referencing import Resource

    file_name = uri.rsplit("/", 1)[-1]
    if not file_name.endswith(SUFFIX):
        raise HarnessError(f"a schema refers to {uri!r}, which is not a shipped schema")
    return Resource.from_contents(load_schema(file_name[: -len(SUFFIX)]))


def _build_validator(schema: dict[str, Any]) -> Any:
    from jsonschema import Draft202012Validator
    from referencing import Registry

    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, registry=Registry(retrieve=_retrieve))


@cache
def _shipped_validator(name: str) -> Any:
    return _build_validator(load_schema(name))


def _validator(schema: SchemaRef) -> Any:
    return _shipped_validator(schema) if isinstance(schema, str) else _build_validator(schema)


# -- reading ------------------------------------------------------------------------------------


def _read_text(path: str) -> str:
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise DataFileError(path, "no such file") from None
    except IsADirectoryError:
        raise DataFileError(path, "is a directory, not a file") from None
    except PermissionError:
        raise DataFileError(path, "permission denied") from None
    except OSError as exc:
        raise DataFileError(path, f"cannot be read: {exc.strerror or exc}") from None
    if data.startswith(b"\x1f\x8b"):
        raise DataFileError(path, "is gzip-compressed; decompress it first")
    if b"\x00" in data[:4096]:
        raise DataFileError(path, "is a binary file, not JSON text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataFileError(path, f"is not UTF-8 text (undecodable byte at offset {exc.start})") from None
    if not text.strip():
        raise DataFileError(path, "is empty")
    return text


def _json_error(exc: json.JSONDecodeError, text: str) -> str:
    if not text[exc.pos :].strip():
        hint = " (the file looks truncated)"
    elif text[: exc.pos].rstrip().endswith(","):
        hint = " (a trailing comma?)"
    else:
        hint = ""
    return f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}{hint}"


def _looks_like_json_lines(path: str, text: str) -> bool:
    if path.lower().endswith(_JSONL_SUFFIXES):
        return True
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < 2:
        return False
    try:
        return isinstance(json.loads(lines[0]), dict)
    except json.JSONDecodeError:
        return False


def _parse_json_lines(path: str, text: str) -> list[Any]:
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DataFileError(
                path, f"JSON Lines line {number} is not valid JSON (column {exc.colno}: {exc.msg})"
            ) from None
    return records


def read_json(path: str | os.PathLike[str]) -> Any:
    """The content of a JSON file, or of a JSON Lines file as a list of its lines' values.

    JSON Lines is recognised by its suffix (.jsonl, .ndjson) or, failing that, by a file that is
    not one JSON document but whose first line is a JSON object on its own.
    """
    file = os.fspath(path)
    text = _read_text(file)
    if file.lower().endswith(_JSONL_SUFFIXES):
        return _parse_json_lines(file, text)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        if _looks_like_json_lines(file, text):
            return _parse_json_lines(file, text)
        raise DataFileError(file, _json_error(exc, text)) from None


def _kind(value: Any) -> str:
    """A JSON name for the type of a parsed value, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    return "object"


def read_json_records(path: str | os.PathLike[str]) -> list[Any]:
    """The records of a data file: a JSON list, or JSON Lines. Records are not checked here."""
    file = os.fspath(path)
    data = read_json(file)
    if isinstance(data, dict):
        lists = [key for key, value in data.items() if isinstance(value, list)]
        hint = f" (did you mean the list under {lists[0]!r}?)" if len(lists) == 1 else ""
        raise DataFileError(file, f"holds a JSON object where a list of records is due{hint}")
    if not isinstance(data, list):
        raise DataFileError(file, f"holds a JSON {_kind(data)} where a list of records is due")
    if not data:
        raise DataFileError(file, "holds no records (an empty list)")
    return data


# -- validating ---------------------------------------------------------------------------------


def json_path(parts: Sequence[str | int]) -> str:
    """`$.portability.Reasoning[0].ground_truth` for ("portability", "Reasoning", 0, "ground_truth")."""
    out = "$"
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENTIFIER.match(part):
            out += f".{part}"
        else:
            out += f"[{json.dumps(part)}]"
    return out


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _expected(schema: Any) -> str:
    """A few words for what a (sub)schema accepts: its description, else its type."""
    if not isinstance(schema, dict):
        return "a valid value"
    if "description" in schema:
        return str(schema["description"]).rstrip(".")
    types = schema.get("type")
    if isinstance(types, list):
        return " or ".join(types)
    return str(types) if types else "a valid value"


def _message(error: Any) -> str:
    """One line saying what is wrong, without jsonschema's dump of the whole instance."""
    kind, value, instance = error.validator, error.validator_value, error.instance
    if kind == "required":
        # jsonschema reports each missing field as an error of its own, all with this same list:
        # every one of them names all (`_issues` keeps one), so none is named four times.
        missing = [name for name in value if isinstance(instance, dict) and name not in instance]
        if not missing:
            return error.message
        names = ", ".join(map(repr, missing))
        return f"missing required field {names}" if len(missing) == 1 else f"missing required fields {names}"
    if kind == "type":
        expected = " or ".join(value) if isinstance(value, list) else value
        return f"expected {expected}, got {_kind(instance)} {_short(instance)}"
    if kind in ("anyOf", "oneOf"):
        options = "; or ".join(_expected(option) for option in value)
        return f"expected {options}; got {_kind(instance)} {_short(instance)}"
    if kind == "additionalProperties" and value is False and isinstance(instance, dict):
        known = error.schema.get("properties", {})
        unexpected = ", ".join(repr(name) for name in instance if name not in known)
        return (
            f"unexpected field {unexpected}" if "," not in unexpected else f"unexpected fields {unexpected}"
        )
    if kind == "minItems" and value == 1 and instance == []:
        return "must not be an empty list"
    if kind == "minLength" and instance == "":
        return "must not be an empty string"
    if kind == "pattern" and value == BLANK_PATTERN:
        return f"must not be blank, got {_short(instance)}"
    if kind == "enum":
        return f"{_short(instance)} is not one of {', '.join(_short(v) for v in value)}"
    return error.message if len(error.message) <= 160 else error.message[:157] + "..."


def _issues(instance: Any, validator: Any, file: str, index: int | None) -> list[RecordIssue]:
    """Every problem of one instance, each once (the missing fields of one object are one)."""
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.path)))
    issues = [RecordIssue(file, index, json_path(list(e.absolute_path)), _message(e)) for e in errors]
    return list(dict.fromkeys(issues))


def validate_records(records: Sequence[Any], schema: SchemaRef, file: str) -> list[RecordIssue]:
    """Every problem of every record against `schema`; [] when all are valid."""
    validator = _validator(schema)
    issues: list[RecordIssue] = []
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            message = f"a record must be a JSON object, got {_kind(record)} {_short(record)}"
            issues.append(RecordIssue(file, index, "$", message))
            continue
        issues.extend(_issues(record, validator, file, index))
    return issues


def validate_document(document: Any, schema: SchemaRef, file: str) -> list[RecordIssue]:
    """Problems of a one-object file (a dataset spec, a suite, a summary); issues have no index."""
    return _issues(document, _validator(schema), file, None)


def check_records_file(path: str | os.PathLike[str], record_format: SchemaRef) -> list[RecordIssue]:
    """Every problem of one data file, including an unreadable file (as one issue without index)."""
    file = os.fspath(path)
    try:
        records = read_json_records(file)
    except DataFileError as exc:
        return [RecordIssue(file, None, "", exc.reason)]
    return validate_records(records, record_format, file)


def check_task_file(task: Task, path: str | os.PathLike[str]) -> list[RecordIssue]:
    """Every problem of one data file for `task`: its own `check_file`, or by default every record
    checked against the JSON Schema of the task's `record_format`."""
    issues = task.check_file(os.fspath(path))
    return check_records_file(path, task.record_format) if issues is None else issues


def format_issues(issues: Sequence[RecordIssue], limit: int = SHOWN_ISSUES) -> str:
    """The first `limit` issues, one a line, then how many more there are."""
    lines = [str(issue) for issue in issues[:limit]]
    if len(issues) > limit:
        lines.append(f"... and {len(issues) - limit} more")
    return "\n".join(lines)
