"""The artifact cache that serves every cache of the harness: stable keys, atomic writes, and
damaged entries recomputed rather than fatal."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from harness.api import JSON_CODEC, TORCH_CODEC, ArtifactCache, content_key


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_content_keys_are_stable_across_processes_and_dict_order():
    # Pinned: a changed key silently orphans every cache on every user's disk.
    assert content_key("mom2", {"b": 1, "a": [1, 2.5, None]}, 3) == (
        "2170d6e8629b33b68e8524b38e422c2661de45d39f509c9a5b0e109cd78dbc4f"
    )
    assert content_key({"a": 1, "b": 2}) == content_key({"b": 2, "a": 1})
    assert content_key("x", 1) != content_key("x", "1") != content_key(["x", 1])


def test_entries_live_under_the_kind_named_by_key_and_suffix(home: Path, tmp_path: Path, monkeypatch):
    key = content_key("k")
    assert ArtifactCache("stats", TORCH_CODEC).path(key) == home / "stats" / f"{key}.pt"
    assert ArtifactCache("pre/abc", fanout=2).path(key) == home / "pre" / "abc" / key[:2] / f"{key}.json"
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "elsewhere"))
    assert ArtifactCache("stats").root == tmp_path / "elsewhere" / "stats"


def test_get_or_compute_computes_once_then_reads_the_file(home: Path):
    calls: list[int] = []
    cache = ArtifactCache("templates", JSON_CODEC)

    def compute() -> list[str]:
        calls.append(1)
        return ["{}", "The cat. {}"]

    key = content_key("templates", 1)
    assert cache.get_or_compute(key, compute) == ["{}", "The cat. {}"]
    cache.path(key).write_text('["from the file"]')
    assert cache.get_or_compute(key, compute) == ["from the file"]
    assert calls == [1]
    assert cache.get_or_compute(content_key("templates", 2), compute) == ["{}", "The cat. {}"]
    assert calls == [1, 1]


def test_a_failed_write_leaves_neither_the_entry_nor_a_temporary_file(home: Path, monkeypatch):
    cache = ArtifactCache("general")
    key = content_key("general")

    def killed(src, dst):
        raise OSError("disk full")

    with monkeypatch.context() as patch, pytest.raises(OSError, match="disk full"):
        patch.setattr(os, "replace", killed)
        cache.store(key, {"acc": 0.5})
    assert _files(home / "general") == []
    cache.store(key, {"acc": 0.5})
    assert _files(home / "general") == [f"{key}.json"]
    assert cache.load(key) == {"acc": 0.5}


@pytest.mark.parametrize(
    ("codec", "damage"),
    [(JSON_CODEC, b'{"acc": 0.'), (TORCH_CODEC, b""), (TORCH_CODEC, b"PK\x03\x04 not a zip")],
)
def test_a_damaged_entry_is_recomputed_and_replaced(home: Path, codec, damage: bytes):
    cache = ArtifactCache("ike", codec)
    key = content_key("ike")
    value = {"acc": 0.5} if codec is JSON_CODEC else torch.arange(4.0)
    cache.path(key).parent.mkdir(parents=True, exist_ok=True)
    cache.path(key).write_bytes(damage)
    with pytest.warns(UserWarning, match="unreadable"):
        got = cache.get_or_compute(key, lambda: value)
    assert got is value
    reread = cache.load(key)
    assert torch.equal(reread, value) if codec is TORCH_CODEC else reread == value


def test_folder_artifacts_appear_complete_or_not_at_all(home: Path):
    cache = ArtifactCache("models")
    builds: list[Path] = []

    def build(out: Path) -> None:
        builds.append(out)
        (out / "config.json").write_text("{}")

    def broken(out: Path) -> None:
        (out / "half.bin").write_bytes(b"\0")
        raise RuntimeError("conversion failed")

    with pytest.raises(RuntimeError, match="conversion failed"):
        cache.folder("model-abc", broken)
    assert _files(home / "models") == []
    folder = cache.folder("model-abc", build)
    assert folder == home / "models" / "model-abc" and (folder / "config.json").is_file()
    assert cache.folder("model-abc", build) == folder and len(builds) == 1
    assert _files(home / "models") == ["model-abc", "model-abc/config.json"]


def test_a_folder_another_process_finished_first_is_used(home: Path):
    cache = ArtifactCache("models")

    def racing(out: Path) -> None:
        (out / "mine").write_text("1")
        winner = home / "models" / "model-x"
        winner.mkdir()
        (winner / "theirs").write_text("1")

    folder = cache.folder("model-x", racing)
    assert _files(folder) == ["theirs"]
    assert _files(home / "models") == ["model-x", "model-x/theirs"]
