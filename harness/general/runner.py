"""The call into lm-evaluation-harness itself. Importing this module imports lm-eval, so the
package imports it only after `environment.prepare_environment` has run.

We call `lm_eval.evaluator.evaluate` rather than `simple_evaluate`: the latter reseeds every
global generator, runs `git describe` and collects the environment (about a second) on every
call, and applies overrides we would have to undo. The few overrides we want are applied here.
Nothing is cached by lm-eval: no response database (it is keyed by prompt text only, so it
would hand an edited model the unedited model's answers) and no request cache.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lm_eval.api.model
import lm_eval.api.task
import lm_eval.models.huggingface
from lm_eval.evaluator import evaluate
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager
from tqdm import tqdm

from harness.general.guards import eval_mode, quiet_logs, seeded_then_restored, weights_left_untied
from harness.ground import HarnessError

if TYPE_CHECKING:
    from harness.models.handle import ModelHandle


#: lm-eval modules that draw progress bars. TQDM_DISABLE cannot silence them: tqdm reads it when it
#: is imported, and HFLM passes `disable=` explicitly anyway.
_PROGRESS_MODULES = (lm_eval.api.task, lm_eval.api.model, lm_eval.models.huggingface)


class _SilentBar(tqdm):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["disable"] = True
        super().__init__(*args, **kwargs)


@contextmanager
def _no_progress_bars() -> Iterator[None]:
    originals = [module.tqdm for module in _PROGRESS_MODULES]
    for module in _PROGRESS_MODULES:
        module.tqdm = _SilentBar
    try:
        yield
    finally:
        for module, original in zip(_PROGRESS_MODULES, originals, strict=True):
            module.tqdm = original


@functools.lru_cache(maxsize=4)
def task_manager(include_path: str | None, with_defaults: bool) -> TaskManager:
    """Indexing lm-eval's own 14k task names takes 10-20 s, so it is done only when a requested
    name is not in the include folder, and once per process."""
    return TaskManager(include_path=include_path, include_defaults=with_defaults)


def _manager_for(tasks: list[str], include_path: str | None) -> TaskManager:
    if include_path is not None:
        local = task_manager(include_path, False)
        if all(name in local.all_tasks for name in tasks):
            return local
    manager = task_manager(include_path, True)
    unknown = [name for name in tasks if name not in manager.all_tasks]
    if unknown:
        where = f"in lm-eval's tasks or in {include_path}" if include_path else "in lm-eval's tasks"
        raise HarnessError(
            f"unknown lm-eval task or group {', '.join(map(repr, unknown))}: not found {where} "
            "(pass a folder of task YAML files with --general-include for your own tasks)"
        )
    return manager


def _configure(task: Any, *, num_fewshot: int | None, seed: int, max_gen_toks: int) -> None:
    """The overrides `simple_evaluate` would apply: shots (a task whose YAML says 0 keeps 0), the
    few-shot sampling seed, and a cap on generation length for tasks that set none (lm-eval's
    default of 256 tokens is minutes per document on a CPU)."""
    configured = task.get_config("num_fewshot")
    if num_fewshot is not None and configured != 0:
        task.set_config(key="num_fewshot", value=num_fewshot)
    elif configured is None:
        task.set_config(key="num_fewshot", value=0)
    task.set_fewshot_seed(seed=seed)
    if task.get_config("output_type") == "generate_until":
        generation = task.get_config("generation_kwargs") or {}
        if "max_gen_toks" not in generation:
            task.set_config(key="generation_kwargs", value={"max_gen_toks": max_gen_toks}, update=True)


def run_lmeval(
    handle: ModelHandle,
    tasks: list[str],
    *,
    include_path: Path | None,
    limit: int | None,
    num_fewshot: int | None,
    batch_size: int,
    seed: int,
    max_gen_toks: int,
) -> dict[str, Any]:
    """lm-eval's raw result dictionary for the model as it is in memory right now."""
    model = handle.model
    with quiet_logs(), _no_progress_bars(), eval_mode(model), seeded_then_restored(seed):
        manager = _manager_for(tasks, None if include_path is None else str(include_path))
        loaded = manager.load(tasks)
        for task in loaded["tasks"].values():
            _configure(task, num_fewshot=num_fewshot, seed=seed, max_gen_toks=max_gen_toks)
        with weights_left_untied(model):
            lm = HFLM(pretrained=model, tokenizer=handle.tokenizer, batch_size=batch_size)
        output = evaluate(
            lm=lm,
            task_dict=loaded,
            limit=limit,
            bootstrap_iters=0,
            log_samples=False,
            cache_requests=False,
        )
    if output is None:
        raise HarnessError("lm-eval returned no results (it only reports on rank 0 of a distributed run)")
    return output
