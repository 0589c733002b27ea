"""The editing protocols: which cases are edited together, when they are scored, when undone.

All modes are one loop over chunks of cases (a chunk is what one `apply` call edits):

- single: chunks of one case; score the case, undo.
- batch: chunks of `--batch-size` cases; score them, undo.
- cross-domain: single mode after the method has been fitted on another task's train split.
- sequential: chunks (of one case, or of `--batch-size`) are never undone. Each case is scored
  right after its own edit (protocol "immediate") and, once `n` cases have been edited for each
  checkpoint of `--eval-at` and at the end, every case edited so far is scored again (protocol
  "after-n", n the number of edits made; with chunks, the first chunk boundary at or past the
  checkpoint). See docs/runs.md for how these relate to the reference toolkit's two
  sequential protocols.

This module plans the work (`Step`s) and knows nothing of models, so resuming can decide what to
skip before anything runs.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from harness.ground import EditCase

IMMEDIATE = "immediate"


def after(n: int) -> str:
    return f"after-{n}"


@dataclass(frozen=True)
class Tagged:
    """A case with the task it came from (a mixed-domain sequence holds several tasks)."""

    task: str
    case: EditCase

    @property
    def key(self) -> tuple[str, str]:
        return (self.task, self.case.case_id)


@dataclass(frozen=True)
class Step:
    """One `apply` call, then the scoring it triggers.

    `score` lists (protocol, cases) to score after this apply; `edits` is how many cases have been
    edited (and not undone) at that point.
    """

    chunk: tuple[Tagged, ...]
    score: tuple[tuple[str, tuple[Tagged, ...]], ...]
    edits: int


def interleave(per_task: Sequence[Sequence[Tagged]], seed: int) -> list[Tagged]:
    """One sequence from several tasks' cases, shuffled by the run seed (the continual study mixes
    domains randomly), so that the same seed always gives the same order."""
    mixed = [case for cases in per_task for case in cases]
    random.Random(seed).shuffle(mixed)
    return mixed


def checkpoints(eval_at: Iterable[int], n_cases: int) -> list[int]:
    """The checkpoints that a sequence of `n_cases` edits reaches, always including its end."""
    return sorted({n for n in eval_at if n < n_cases} | {n_cases})


def steps(
    cases: Sequence[Tagged], batch_size: int, *, sequential: bool, eval_at: Iterable[int]
) -> list[Step]:
    chunks = [tuple(cases[i : i + batch_size]) for i in range(0, len(cases), batch_size)]
    marks = checkpoints(eval_at, len(cases)) if sequential else []
    out = []
    edited = 0
    for chunk in chunks:
        edited += len(chunk)
        score: list[tuple[str, tuple[Tagged, ...]]] = [(IMMEDIATE, chunk)]
        if any(edited - len(chunk) < n <= edited for n in marks):
            score.append((after(edited), tuple(cases[:edited])))
        out.append(Step(chunk, tuple(score), edited if sequential else len(chunk)))
    return out
