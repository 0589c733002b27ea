"""General-capability checks through lm-evaluation-harness: how much of a model's general ability
survives its edits (the KnowEdit study ran MMLU, TriviaQA and AGIEval after 5 sequential edits).

The edited model is evaluated in memory, as it is: wrapped in lm-eval's HFLM, never reloaded or
copied to disk. The unedited model's figures are computed once and cached on disk by model
fingerprint. See docs/general.md for how a run calls these two functions.

Importing this package does not import lm-eval; the first evaluation does, after settling offline
mode (which the HF libraries read at import time).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.cache import ArtifactCache, content_key
from harness.general.environment import INSTALL_HINT, LmEvalMissingError, prepare_environment, require_lmeval
from harness.general.results import GeneralResult, read_results
from harness.ground import HarnessError

if TYPE_CHECKING:
    from harness.models.handle import ModelHandle

__all__ = [
    "INSTALL_HINT",
    "GeneralResult",
    "LmEvalMissingError",
    "check_tasks",
    "evaluate_general",
    "general_before",
]

#: Generation cap for generate_until tasks that set no `max_gen_toks` of their own.
DEFAULT_MAX_GEN_TOKS = 32


def _include_folder(include_path: str | Path | None) -> Path | None:
    if include_path is None:
        return None
    folder = Path(include_path).expanduser().resolve()
    if not folder.is_dir():
        raise HarnessError(f"lm-eval include folder {include_path}: not a directory")
    return folder


def _settle(
    tasks: list[str],
    include_path: str | Path | None,
    limit: int | None,
    num_fewshot: int | None,
    batch_size: int,
    offline: bool | None,
) -> tuple[Path | None, str]:
    """Check the arguments and prepare the process; (include folder, lm-eval version)."""
    if not tasks or not all(isinstance(name, str) and name for name in tasks):
        raise HarnessError(f"general-capability tasks must be non-empty lm-eval task names, got {tasks!r}")
    if limit is not None and limit < 1:
        raise HarnessError(f"the general-capability limit must be a positive document count, got {limit}")
    if num_fewshot is not None and num_fewshot < 0:
        raise HarnessError(f"num_fewshot must be 0 or more, got {num_fewshot}")
    if batch_size < 1:
        raise HarnessError(f"the general-capability batch size must be positive, got {batch_size}")
    folder = _include_folder(include_path)
    prepare_environment(offline)
    return folder, require_lmeval()


def check_tasks(
    tasks: list[str], *, include_path: str | Path | None = None, offline: bool | None = None
) -> None:
    """Build every requested lm-eval task (its documents read, no model involved), so that a task
    whose data cannot be had fails before a run loads its model, not after.

    Raises HarnessError in one line for lm-eval missing (`LmEvalMissingError`), an unknown name, a
    missing include folder, or a task that cannot be built: the line names the task (and the
    subtask of a group), the dataset it could not read, and what to do instead. `offline` as in
    `evaluate_general`. Building a stock task reads its dataset from the `datasets` cache, or
    downloads it when online; lm-eval's task index is built once per process and reused by the
    evaluations that follow.
    """
    folder, _ = _settle(tasks, include_path, None, None, 1, offline)
    from harness.general.runner import check_buildable

    check_buildable(list(tasks), folder)


def evaluate_general(
    handle: ModelHandle,
    tasks: list[str],
    *,
    include_path: str | Path | None = None,
    limit: int | None = None,
    num_fewshot: int | None = None,
    batch_size: int = 8,
    seed: int = 0,
    max_gen_toks: int = DEFAULT_MAX_GEN_TOKS,
    offline: bool | None = None,
    chat_template: bool = False,
) -> dict[str, GeneralResult]:
    """Evaluate the model as it is now on lm-eval tasks or groups; one result per requested name.

    `include_path` is a folder of lm-eval task YAML files (local or offline data); `limit` the
    first N documents of every task (of every task inside a group); `num_fewshot` overrides the
    tasks' shots except where a YAML fixes 0. The caller's random streams and the model's train
    mode are left as they were. `offline=None` goes offline when an HF offline variable is set or
    the hub is unreachable. `chat_template` has lm-eval put every prompt in the model's chat
    template (its own `apply_chat_template`, few-shot examples as turns, as `simple_evaluate` does).
    Raises LmEvalMissingError when lm-eval is not installed.
    """
    folder, version = _settle(tasks, include_path, limit, num_fewshot, batch_size, offline)
    from harness.general.runner import run_lmeval

    output = run_lmeval(
        handle,
        list(tasks),
        include_path=folder,
        limit=limit,
        num_fewshot=num_fewshot,
        batch_size=batch_size,
        seed=seed,
        max_gen_toks=max_gen_toks,
        chat_template=chat_template,
    )
    return read_results(output, list(tasks), limit=limit, lmeval_version=version)


def folder_digest(folder: Path | None) -> str | None:
    """A hash of every file under the include folder (names and bytes): editing a task's YAML or
    data must invalidate cached figures, as lm-eval's own request cache fails to."""
    if folder is None:
        return None
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def general_before(
    handle: ModelHandle,
    tasks: list[str],
    *,
    include_path: str | Path | None = None,
    limit: int | None = None,
    num_fewshot: int | None = None,
    batch_size: int = 8,
    seed: int = 0,
    max_gen_toks: int = DEFAULT_MAX_GEN_TOKS,
    offline: bool | None = None,
    chat_template: bool = False,
) -> dict[str, GeneralResult]:
    """`evaluate_general` for the unedited model, computed once and then read from the
    "general" artifact cache. The key is the model's fingerprint, the task names, the include
    folder's content, limit, shots, seed, generation cap, lm-eval's version and the chat template
    (its text when applied).

    The handle's fingerprint is taken when first asked for, so call this before editing or after
    the runner has asked for the fingerprint at load: then it always describes the unedited model.
    """
    folder, version = _settle(tasks, include_path, limit, num_fewshot, batch_size, offline)
    key = content_key(
        "general-before",
        handle.fingerprint(),
        sorted(tasks),
        folder_digest(folder),
        limit,
        num_fewshot,
        seed,
        max_gen_toks,
        version,
        handle.tokenizer.chat_template if chat_template else None,
    )

    def compute() -> dict[str, Any]:
        results = evaluate_general(
            handle,
            tasks,
            include_path=folder,
            limit=limit,
            num_fewshot=num_fewshot,
            batch_size=batch_size,
            seed=seed,
            max_gen_toks=max_gen_toks,
            offline=offline,
            chat_template=chat_template,
        )
        return {name: result.to_json() for name, result in results.items()}

    stored = ArtifactCache("general").get_or_compute(key, compute)
    return {name: GeneralResult.from_json(stored[name]) for name in tasks}
