"""Where the harness keeps what it computes once and reuses: converted models, second-moment
statistics, context templates, retrieval indexes, pre-edit outcomes, lm-eval baselines.

Every entry is addressed by a content key, a hash of everything that affects it, so a stale entry
can never be read for a changed input. `ArtifactCache` is the one way in: it names the file, writes
it atomically (a private temporary file renamed into place, so concurrent writers of the same key
need no lock and a reader never sees half a file) and treats an entry it cannot decode as absent,
so a damaged file is recomputed and replaced rather than failing every later run.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

HOME_ENV = "HARNESS_HOME"

T = TypeVar("T")


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
    """A stable hex digest (sha256, 64 characters) of JSON-serializable parts (dict keys sorted;
    anything JSON cannot encode is encoded by its `str`)."""
    payload = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write through a private temporary file in the same folder and rename it over `path`, so a
    killed process never leaves half a file and two writers never mix their bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _private_name(path)
    try:
        with tmp.open("xb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _private_name(path: Path) -> Path:
    """A hidden sibling name no other writer uses (process id and random suffix); created with
    the usual permissions, unlike `tempfile`'s owner-only files."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


@dataclass(frozen=True)
class Codec(Generic[T]):
    """How one kind of artifact becomes bytes on disk and back: `load` may raise anything on a
    damaged file (the cache then recomputes the entry)."""

    suffix: str
    dump: Callable[[T], bytes]
    load: Callable[[bytes], T]


def _json_dump(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True).encode()


def _torch_dump(value: Any) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def _torch_load(data: bytes) -> Any:
    import torch

    return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")


#: JSON values (dicts, lists, numbers, strings), as `.json` files.
JSON_CODEC: Codec[Any] = Codec(".json", _json_dump, json.loads)
#: Tensors, or dicts and lists of tensors and plain values, as `.pt` files (`torch.save`; loaded
#: with `weights_only=True`, onto the CPU).
TORCH_CODEC: Codec[Any] = Codec(".pt", _torch_dump, _torch_load)


class ArtifactCache(Generic[T]):
    """One kind of cached artifact: the files `$HARNESS_HOME/<kind>/<key><suffix>`.

    `key` is a `content_key(...)` of everything the artifact depends on (a readable prefix such as a
    file stem may come before it). `fanout=2` spreads a kind with very many entries over
    subfolders named by the key's first two characters. The folder is looked up on every call, so
    a changed `$HARNESS_HOME` takes effect at once.

    Example (a method's precomputed table, computed once per model)::

        cache = ArtifactCache("my-method", TORCH_CODEC)
        table = cache.get_or_compute(content_key("table-v1", handle.fingerprint()), lambda: build(handle))
    """

    def __init__(self, kind: str, codec: Codec[T] = JSON_CODEC, *, fanout: int = 0) -> None:
        self.kind = kind
        self.codec = codec
        self.fanout = fanout

    @property
    def root(self) -> Path:
        return cache_dir(self.kind)

    def path(self, key: str) -> Path:
        """Where the entry `key` lives (whether or not it exists yet)."""
        folder = self.root / key[: self.fanout] if self.fanout else self.root
        return folder / f"{key}{self.codec.suffix}"

    def load(self, key: str) -> T | None:
        """The stored value, or None when there is none or it cannot be decoded (a warning says
        so; the damaged file stays until `store` replaces it)."""
        path = self.path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            return self.codec.load(data)
        except Exception as exc:
            warnings.warn(f"cache entry {path} is unreadable ({exc!r}); computing it again", stacklevel=2)
            return None

    def store(self, key: str, value: T) -> None:
        """Write the entry atomically; a concurrent writer of the same key writes the same value."""
        atomic_write_bytes(self.path(key), self.codec.dump(value))

    def get_or_compute(self, key: str, compute: Callable[[], T]) -> T:
        """The stored value of `key`, or `compute()`'s, stored before it is returned."""
        value = self.load(key)
        if value is None:
            value = compute()
            self.store(key, value)
        return value

    def folder(self, key: str, build: Callable[[Path], None]) -> Path:
        """A folder artifact (e.g. a converted model): `build(tmp)` fills a private temporary
        folder that is renamed to `<kind>/<key>` when complete, so a killed or concurrent build
        never leaves or exposes a partial folder. Returns the folder, building it if absent."""
        target = self.root / key
        if target.is_dir():
            return target
        tmp = _private_name(target)
        try:
            tmp.mkdir()
            build(tmp)
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():  # another process's rename won the race: use its folder
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target
