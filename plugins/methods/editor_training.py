"""What MEND and SERAC share to learn from a train split: batches drawn per step, the edit loss
on a case's prompt and rephrases, and the probes a case gives of inputs outside its scope.

Both train with `harness.api.TrainingLoop` (one stored editor per model, hyperparameters, split and
seed; resumed after a kill). A step's cases come from `loop.generator(step)`, so a resumed training
draws what an uninterrupted one draws.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from harness.api import EditCase, HarnessError, Method, TrainingLoop

if TYPE_CHECKING:
    from collections.abc import Mapping

    from harness.api import ModelHandle, TrainingProgress

#: The hparams every trained editor has: its training budget and seed.
TRAINING_PROPERTIES: dict[str, dict[str, Any]] = {
    "steps": {
        "type": "integer",
        "minimum": 0,
        "default": 100,
        "description": "optimiser steps of the editor's training (0: the untrained editor)",
    },
    "train_batch": {"type": "integer", "minimum": 1, "default": 4, "description": "train cases per step"},
    "seed": {
        "type": "integer",
        "default": 0,
        "description": "seed of the editor's initialisation and batches",
    },
    "save_every": {
        "type": "integer",
        "minimum": 1,
        "default": 25,
        "description": "steps between the partial checkpoints a killed training resumes from",
    },
}


def training_loop(
    method: str,
    handle: ModelHandle,
    cases: Sequence[EditCase],
    hparams: Mapping[str, Any],
    progress: TrainingProgress | None,
) -> TrainingLoop:
    """The stored training of `method`'s editor on `cases`, with the budget, seed and checkpoint
    interval of its `TRAINING_PROPERTIES` hparams (the loop keys its checkpoint by all hparams)."""
    return TrainingLoop(
        method,
        handle,
        hparams,
        cases,
        seed=hparams["seed"],
        steps=hparams["steps"],
        save_every=hparams["save_every"],
        progress=progress,
    )


def last_layers(handle: ModelHandle, count: int) -> list[int]:
    """The last `count` layers (by relative depth: the layer at depth 1.0 and those below it), where
    both editors act by default, as in the MEND paper."""
    last = handle.adapter.layer_at(1.0)
    return list(range(max(0, last - count + 1), last + 1))


def usable(cases: Sequence[EditCase], method: str) -> list[EditCase]:
    """The train cases with a prompt and a target (all the editors learn from); HarnessError when
    there are none, naming the method."""
    kept = [c for c in cases if c.prompt.strip() and c.target_new.strip()]
    if not kept:
        raise HarnessError(f"{method}: the train split has no case with a prompt and a target to learn from")
    return kept


def draw(cases: Sequence[EditCase], n: int, generator: torch.Generator) -> list[EditCase]:
    """`n` distinct cases (all of them when there are fewer), chosen by `generator`."""
    order = torch.randperm(len(cases), generator=generator)[:n]
    return [cases[i] for i in order.tolist()]


def in_scope_prompts(case: EditCase) -> list[str]:
    """The inputs an edit should change: its prompt and its rephrases."""
    return [case.prompt, *case.rephrases]


def out_of_scope_probes(case: EditCase) -> list[tuple[str, str]]:
    """(prompt, answer) of the case's locality probes: inputs near the edit that it must leave alone."""
    return [(p.prompt, p.answers[0]) for group in case.locality.values() for p in group if p.answers]


def pick(items: Sequence[Any], generator: torch.Generator) -> Any:
    return items[int(torch.randint(len(items), (1,), generator=generator))]


def need_fit(editor: Any, handle: ModelHandle, method: str) -> None:
    """Refuse an edit before `fit` gave the method its trained editor for this model (`editor`:
    the method's trained state, with the `handle` it was trained on, or None)."""
    if editor is None or editor.handle is not handle:
        raise HarnessError(f"{method} edits with a trained editor: call fit() with a train split first")


class TrainedEditorMethod(Method):
    """What MEND and SERAC share as methods: the editor `fit` trains is kept on the method (None
    until then), and both act on the last three layers by default, as in the MEND paper."""

    def __init__(self) -> None:
        self.editor: Any = None

    def default_hparams(self, handle: ModelHandle) -> dict[str, Any]:
        return {"layers": last_layers(handle, 3)}
