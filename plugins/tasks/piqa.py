"""PIQA, read as locality probes for general ability rather than as edits.

EasyEdit ships `piqa_valid.jsonl` among its locality data: physical-commonsense questions with
two candidate solutions, asked before and after editing to see that unrelated reasoning survives.
A record edits nothing, so it is not a task; `read_piqa` validates the file like task data and
hands back the questions. The published labels live in a separate `piqa_valid-labels.lst`, which
the shared copy lacks, so a question carries no answer: it can be scored by agreement between the
unedited and the edited model, not by accuracy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from harness.api import HarnessError, format_issues, read_json_records, validate_records

RECORD_FORMAT = "piqa"


@dataclass(frozen=True)
class PiqaQuestion:
    """A goal and its two candidate solutions, in the file's order (`sol1`, `sol2`)."""

    goal: str
    solutions: tuple[str, str]


def read_piqa(path: str | os.PathLike[str]) -> tuple[PiqaQuestion, ...]:
    """Every question of a PIQA file (JSON Lines or a JSON list); a HarnessError on any bad record."""
    file = os.fspath(path)
    records = read_json_records(file)
    issues = validate_records(records, RECORD_FORMAT, file)
    if issues:
        raise HarnessError(f"{len(issues)} problem(s) in the PIQA file {file}:\n{format_issues(issues)}")
    return tuple(PiqaQuestion(goal=r["goal"], solutions=(r["sol1"], r["sol2"])) for r in records)
