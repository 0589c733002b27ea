"""Reading dataset spec files, and finding the data files a task reads.

Data is looked for where the user said (`--data-dir`), then where their environment says
(`$HARNESS_DATA_DIR`), then on the Hugging Face hub for users who are online. Each step is cheap to
explain, so the one error a user sees when nothing is found lists every place that was tried and
the flag that fixes it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.ground import DatasetSpec, HarnessError

DATA_DIR_ENV = "HARNESS_DATA_DIR"
_OFFLINE_ENVS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
_SPEC_SUFFIXES = (".json",)


@dataclass(frozen=True)
class DataFile:
    """Where one split of a task may live: paths relative to a data directory, and on the hub;
    `obtain` says where a user gets a file that is in neither (shown when it is not found)."""

    local: tuple[str, ...]
    hub_repo: str = ""
    hub_path: str = ""
    obtain: str = ""


def _offline() -> bool:
    return any(os.environ.get(name, "").strip().lower() in ("1", "true", "yes") for name in _OFFLINE_ENVS)


def _data_dirs(data_dir: str | os.PathLike[str] | None) -> list[tuple[str, Path]]:
    dirs = []
    if data_dir:
        dirs.append(("--data-dir", Path(data_dir).expanduser()))
    if os.environ.get(DATA_DIR_ENV):
        dirs.append((f"${DATA_DIR_ENV}", Path(os.environ[DATA_DIR_ENV]).expanduser()))
    return dirs


def _from_hub(spec: DataFile, tried: list[str]) -> Path | None:
    """The hub copy of a file, downloaded once into the Hugging Face cache.

    The raw file is fetched rather than `datasets.load_dataset`, because Arrow cannot hold the
    KnowEdit answer fields, which are a string in one record and a list of lists in the next.
    """
    from huggingface_hub import hf_hub_download

    offline = _offline()
    where = f"hub dataset {spec.hub_repo}: {spec.hub_path}"
    try:
        path = hf_hub_download(spec.hub_repo, spec.hub_path, repo_type="dataset", local_files_only=offline)
    except Exception as exc:
        reason = "offline (HF_HUB_OFFLINE is set), not in the local cache" if offline else str(exc)
        tried.append(f"{where} ({reason.splitlines()[0] if reason else type(exc).__name__})")
        return None
    return Path(path)


def locate_data_file(spec: DataFile, data_dir: str | os.PathLike[str] | None, *, task: str) -> Path:
    """The first existing copy of a data file, in the documented order; a HarnessError otherwise."""
    found, tried = find_data_file(spec, data_dir)
    if found is not None:
        return found
    raise HarnessError(not_found_message(task, tried, spec.obtain))


def find_data_file(spec: DataFile, data_dir: str | os.PathLike[str] | None) -> tuple[Path | None, list[str]]:
    """The first existing copy of a data file (or None) and every place that was looked at."""
    tried: list[str] = []
    for origin, folder in _data_dirs(data_dir):
        for relative in spec.local:
            candidate = folder / relative
            if candidate.is_file():
                return candidate, tried
            tried.append(f"{candidate} (from {origin})")
    if spec.hub_repo:
        path = _from_hub(spec, tried)
        if path is not None:
            return path, tried
    return None, tried


def not_found_message(task: str, tried: Sequence[str], obtain: str = "") -> str:
    places = "\n".join(f"  - {place}" for place in tried) or "  - (no data directory was given)"
    return (
        f"task {task!r}: data file not found. Looked at:\n{places}\n"
        f"Pass --data-dir DIR (or set ${DATA_DIR_ENV}) to a folder with the files in the layout above."
    ) + (f"\n{obtain}" if obtain else "")


def is_spec_path(name_or_path: str | os.PathLike[str]) -> bool:
    """A dataset spec is named by a path to a JSON file; a task by a bare name."""
    text = os.fspath(name_or_path)
    return text.lower().endswith(_SPEC_SUFFIXES) or os.sep in text or Path(text).is_file()


def read_dataset_spec(path: str | os.PathLike[str]) -> DatasetSpec:
    """A dataset spec file, validated against its schema, with its files made absolute.

    Which task reads it is the registry's business (`Registry.tasks.from_spec`): this module knows
    no task. Raises HarnessError naming the file and the JSON path of every problem.
    """
    from harness.schemas import format_issues, read_json, validate_document

    file = os.fspath(path)
    data = read_json(file)
    issues = validate_document(data, "dataset-spec", file)
    if issues:
        raise HarnessError(f"invalid dataset spec:\n{format_issues(issues)}")
    folder = Path(file).resolve().parent
    metrics = data.get("metrics")
    return DatasetSpec(
        name=data["name"],
        files={split: folder / relative for split, relative in data["files"].items()},
        record_format=data.get("record_format"),
        fields=data.get("fields"),
        metrics=tuple(metrics) if metrics is not None else None,
        chat_template=data.get("chat_template", False),
        description=data.get("description", ""),
        source=file,
    )
