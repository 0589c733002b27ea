"""What a plugin's tests import besides `harness.api`: tiny models, the installed registry, the
evaluator and task resolution, so that a test drives a plugin the way a run does.

Importing this package needs no pytest (`build_tiny_model` serves benchmarks and scripts too); the
pytest fixtures (`tiny_llama`, `tiny_gpt2`, `tiny_handle`, `smollm2`) live in
`harness.testing.fixtures`, which pytest loads by itself through the `pytest11` entry point.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

from harness.testing.tiny import FAMILIES, TINY_VOCAB_SIZE, build_tiny_model

if TYPE_CHECKING:
    from harness.ground import Task

_LAZY: dict[str, str] = {
    "Evaluator": "harness.testing.evaluation",
    "load_model": "harness.models.load",
    "build_registry": "harness.plugins",
    "get_registry": "harness.plugins",
}

__all__ = ["FAMILIES", "TINY_VOCAB_SIZE", "build_tiny_model", "resolve_task", *_LAZY]


def resolve_task(name_or_spec_path: str | os.PathLike[str]) -> Task:
    """A task of the installed plugins by name, or the task of a dataset spec file, as a run
    resolves it (`registry.tasks.resolve` on the process registry)."""
    from harness.plugins import get_registry

    return get_registry().tasks.resolve(name_or_spec_path)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'harness.testing' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
