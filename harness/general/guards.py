"""Context managers that keep an lm-eval call from leaving traces on the caller's process: its
random streams, the model's train/eval mode and tied weights, and the log output."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from harness.seeding import seed_everything


@contextmanager
def seeded_then_restored(seed: int) -> Iterator[None]:
    """Seed every generator for the evaluation, then give the caller back exactly the streams it
    had: a run's later edits must draw the same numbers whether or not a check ran in between."""
    python_state = random.getstate()
    numpy_state = np.random.get_state()
    torch_state = torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    seed_everything(seed)
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        torch.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Evaluate without dropout, and leave the model in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@contextmanager
def weights_left_untied(model: torch.nn.Module) -> Iterator[None]:
    """HFLM's constructor calls `model.tie_weights()`. On a model whose output head was edited
    apart from the input embeddings (its config still saying "tied"), that silently copies the
    embeddings over the edit. The model in our hands is already set up, so tying is skipped."""
    model.tie_weights = _no_op  # type: ignore[method-assign]
    try:
        yield
    finally:
        del model.tie_weights


def _no_op(*_args: Any, **_kwargs: Any) -> None:
    return None


@contextmanager
def quiet_logs() -> Iterator[None]:
    """Only errors from lm-eval and no `datasets` progress bars: its per-task warnings (custom
    datasets, pre-initialised models) say nothing a harness user can act on."""
    import datasets

    logger = logging.getLogger("lm_eval")
    level = logger.level
    bars_were_enabled = datasets.is_progress_bar_enabled()
    logger.setLevel(logging.ERROR)
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        logger.setLevel(level)
        if bars_were_enabled:
            datasets.enable_progress_bars()
