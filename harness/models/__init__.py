"""Models: loading (hub ids, folders, GGUF files, plugin aliases), architecture adapters, the model
handle with exact snapshot/restore, and tokenization.

Names are resolved lazily so that importing `harness.models.sources` (torch-free, used by
`harness list models`) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "load_model": "harness.models.load",
    "ModelHandle": "harness.models.handle",
    "Snapshot": "harness.models.handle",
    "SnapshotEdit": "harness.models.handle",
    "RestoreError": "harness.models.handle",
    "ArchitectureAdapter": "harness.models.adapters",
    "encode_answers": "harness.models.tokenization",
    "encode_prompts": "harness.models.tokenization",
    "render_chat": "harness.models.tokenization",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'harness.models' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
