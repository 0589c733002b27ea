"""Where the harness keeps what it computes once and reuses: converted models, second-moment
statistics, pre-edit outputs. Every entry is addressed by a hash of everything that affects it,
so a stale entry can never be read for a changed input."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

HOME_ENV = "HARNESS_HOME"


def harness_home() -> Path:
    """`$HARNESS_HOME`, else ~/.cache/knowedit-harness."""
    root = os.environ.get(HOME_ENV) or Path.home() / ".cache" / "knowedit-harness"
    return Path(root).expanduser()


def cache_dir(kind: str) -> Path:
    """A folder for one kind of cached artifact ("models", "stats", "pre", ...), created on use."""
    path = harness_home() / kind
    path.mkdir(parents=True, exist_ok=True)
    return path


def content_key(*parts: Any) -> str:
    """A stable hex digest of JSON-serializable parts (dict keys sorted)."""
    payload = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write through a temporary file and rename, so a killed process never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
