"""The one module a plugin imports at run time: everything a method, task or metric needs.

Plugins, built-in or third-party, reach the harness only through these names (and
`harness.testing` in their tests), so the core can be reorganised without breaking a published
plugin. The surface is versioned by `API_VERSION` (semantic versioning: a name removed or an
incompatible change bumps the major number, a name added the minor one); CHANGELOG.md records
every change. docs/plugins.md documents every name.

Plain data types and base classes are imported at once and never import torch, so that
`harness list` and `harness --help` stay fast; names that need torch (model handles, tokenization,
forward-hook capture) are imported on first use (PEP 562 module `__getattr__`).
"""

from __future__ import annotations

import importlib
from typing import Any

from harness import hookimpl
from harness.ground import (
    LOCALITY_GROUPS,
    PORTABILITY_GROUPS,
    AppliedEdit,
    Capabilities,
    DatasetSpec,
    EditCase,
    HarnessError,
    LoadedCases,
    Method,
    Metric,
    MetricInfo,
    Probe,
    RecordIssue,
    Task,
)

#: The version of this surface (semantic versioning), independent of the package's version.
API_VERSION = "1.1.0"

#: Names imported on first use: name -> the module that defines it ("module:attribute" where the
#: attribute is named otherwise there).
_LAZY: dict[str, str] = {
    # models
    "ModelHandle": "harness.models.handle",
    "Snapshot": "harness.models.handle",
    "SnapshotEdit": "harness.models.handle",
    "RestoreError": "harness.models.handle",
    "tensor_digest": "harness.models.handle",
    "ArchitectureAdapter": "harness.models.adapters",
    "package_file": "harness.models.sources",
    "package_file_available": "harness.models.sources",
    "load_model": "harness.commands:load_named_model",
    "capture_modules": "harness.models.capture",
    "PartialForward": "harness.models.partial",
    # run directories and reports (for plugin subcommands)
    "open_run": "harness.commands:open_run",
    "html_page": "harness.runs.page",
    # prompts and answers
    "AnswerBatch": "harness.models.tokenization",
    "PromptBatch": "harness.models.tokenization",
    "encode_answers": "harness.models.tokenization",
    "encode_prompts": "harness.models.tokenization",
    "join_prompt_answer": "harness.models.tokenization",
    "trim_prompt": "harness.models.tokenization",
    # what metrics ask and get back
    "Request": "harness.evaluation.requests",
    "Outcomes": "harness.evaluation.requests",
    "TokenScores": "harness.evaluation.requests",
    "Generation": "harness.evaluation.requests",
    "PRE": "harness.evaluation.requests",
    "POST": "harness.evaluation.requests",
    "BOTH": "harness.evaluation.requests",
    "EvalOptions": "harness.evaluation.options",
    # caches and seeds
    "content_key": "harness.cache",
    "ArtifactCache": "harness.cache",
    "Codec": "harness.cache",
    "JSON_CODEC": "harness.cache",
    "TORCH_CODEC": "harness.cache",
    "seed_everything": "harness.seeding",
    "case_seed": "harness.seeding",
    # trained editors
    "TrainingLoop": "harness.training",
    "TrainingProgress": "harness.training",
    # data files and records
    "DataFile": "harness.tasks",
    "find_data_file": "harness.tasks",
    "locate_data_file": "harness.tasks",
    "not_found_message": "harness.tasks",
    "DataFileError": "harness.schemas",
    "read_json": "harness.schemas",
    "read_json_records": "harness.schemas",
    "validate_records": "harness.schemas",
    "validate_document": "harness.schemas",
    "check_records_file": "harness.schemas",
    "format_issues": "harness.schemas",
}

__all__ = [
    "API_VERSION",
    "LOCALITY_GROUPS",
    "PORTABILITY_GROUPS",
    "AppliedEdit",
    "Capabilities",
    "DatasetSpec",
    "EditCase",
    "HarnessError",
    "LoadedCases",
    "Method",
    "Metric",
    "MetricInfo",
    "Probe",
    "RecordIssue",
    "Task",
    "hookimpl",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'harness.api' has no attribute {name!r}")
    module, _, attribute = target.partition(":")
    value = getattr(importlib.import_module(module), attribute or name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
