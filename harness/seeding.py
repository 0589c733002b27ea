"""Seeds. Each case gets its own seed derived from the run seed and its id, so a resumed run, or a
run over a subset, gives every case the same random stream as an uninterrupted run."""

from __future__ import annotations

import hashlib
import random


def case_seed(seed: int, case_id: str) -> int:
    digest = hashlib.sha256(f"{seed}:{case_id}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:
        pass
    import torch

    torch.manual_seed(seed)
