"""Suites: named sets of methods x tasks, shipped as JSON files that plugins register.

A suite file is checked against schemas/suite.schema.json when it is used, so a broken third-party
suite names its file and the field at fault instead of failing somewhere inside a run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from harness.ground import HarnessError
from harness.schemas import format_issues, read_json, validate_document


@dataclass(frozen=True)
class Suite:
    name: str
    methods: tuple[str, ...]
    tasks: tuple[str, ...]
    description: str = ""
    model: str | None = None
    mode: str = ""
    batch_size: int = 0
    eval_at: tuple[int, ...] = ()
    limit: int | None = None
    #: (method, task) -> why the suite leaves that pair out.
    excluded: Mapping[tuple[str, str], str] = field(default_factory=dict)
    hparams: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    source: str = ""


def load_suite(path: str | os.PathLike[str]) -> Suite:
    """Read and validate one suite file."""
    file = os.fspath(path)
    data = read_json(file)
    issues = validate_document(data, "suite", file)
    if issues:
        raise HarnessError(f"invalid suite file:\n{format_issues(issues)}")
    return Suite(
        name=data["name"],
        methods=tuple(data["methods"]),
        tasks=tuple(data["tasks"]),
        description=data.get("description", ""),
        model=data.get("model"),
        mode=data.get("mode", ""),
        batch_size=data.get("batch_size", 0),
        eval_at=tuple(data.get("eval_at", ())),
        limit=data.get("limit"),
        excluded={(e["method"], e["task"]): e["reason"] for e in data.get("exclude", ())},
        hparams=data.get("hparams", {}),
        source=file,
    )
