"""Loads this folder's JSONL files for the task YAMLs beside it (through `custom_dataset`), so the
tasks need neither the hub nor a path relative to the working directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import datasets

HERE = Path(__file__).parent


def load_jsonl(data_file: str, **_metadata: Any) -> datasets.DatasetDict:
    """lm-eval passes the task's metadata along with `dataset_kwargs`; only the file matters."""
    rows = [json.loads(line) for line in (HERE / data_file).read_text().splitlines() if line.strip()]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})
