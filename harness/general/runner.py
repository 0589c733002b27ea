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

from harness.general.environment import offline_requested
from harness.general.guards import eval_mode, quiet_logs, seeded_then_restored, weights_left_untied
from harness.ground import HarnessError
from harness.plugins import did_you_mean

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
        hint = did_you_mean(unknown[0], manager.all_tasks)
        raise HarnessError(
            f"unknown lm-eval task or group {', '.join(map(repr, unknown))}{hint}: not found {where} "
            "(pass a folder of task YAML files with --general-include for your own tasks)"
        )
    return manager


def _failing_dataset(exc: BaseException) -> tuple[str, str] | None:
    """(task name, dataset) of the lm-eval task whose `download` raised `exc`: the innermost frame
    of its traceback that belongs to a task object, which for a group is the failing subtask."""
    found = None
    frame = exc.__traceback__
    while frame is not None:
        config = getattr(frame.tb_frame.f_locals.get("self"), "config", None)
        path = getattr(config, "dataset_path", None)
        if isinstance(path, str):
            name = getattr(config, "dataset_name", None)
            found = (str(getattr(config, "task", "")), f"{path} ({name})" if name else path)
        frame = frame.tb_next
    return found


def _unbuildable(name: str, exc: BaseException, include_path: str | None) -> str:
    """One line for a task that lm-eval could not build: the task, its dataset, and the ways out."""
    failing = _failing_dataset(exc)
    task = repr(name)
    if failing is not None and failing[0] and failing[0] != name:
        task += f" (its task {failing[0]!r})"
    dataset = f"dataset {failing[1]}" if failing is not None else "its data"
    if offline_requested():
        reason = f"{dataset} is not in the local `datasets` cache and the hub is offline"
    else:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        reason = f"{dataset} could not be read ({type(exc).__name__}: {first})"
    instead = "your own task YAMLs with --general-include DIR"
    if include_path is not None:
        instead = f"a task from {include_path} (--general-include)"
    return (
        f"lm-eval task {task} cannot be built: {reason}; run it once online to fill the cache, "
        f"point HF_HOME at a populated Hugging Face cache, or use {instead}"
    )


def check_buildable(tasks: list[str], include_path: Path | None) -> None:
    """Build each task as `run_lmeval` will (names resolved the same way), reading its documents;
    a HarnessError in one line for the first that cannot be built (see `_unbuildable`)."""
    include = None if include_path is None else str(include_path)
    with quiet_logs():
        manager = _manager_for(tasks, include)
        for name in tasks:
            try:
                manager.load([name])
            except Exception as exc:  # lm-eval and `datasets` raise anything from OSError to KeyError
                raise HarnessError(_unbuildable(name, exc, include)) from None


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
    chat_template: bool = False,
) -> dict[str, Any]:
    """lm-eval's raw result dictionary for the model as it is in memory right now; with
    `chat_template`, every prompt in the model's chat template (few-shot examples as turns)."""
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
            apply_chat_template=chat_template,
            fewshot_as_multiturn=chat_template,
        )
    if output is None:
        raise HarnessError("lm-eval returned no results (it only reports on rank 0 of a distributed run)")
    return output
