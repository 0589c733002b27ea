"""`harness train`: train a method's editor on a task's train split, once, and store it.

Trained editors (methods whose `capabilities.needs_training` is set) keep what they learn as a
content-keyed artifact (`harness.training`): this command trains it ahead of a run, with a bar
showing the loss; `harness run` then finds it (or trains it itself, saying so). A killed training
resumes from its last saved step when the same command runs again.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import click

from harness.commands import installed_catalog
from harness.ground import HarnessError


@dataclass(frozen=True)
class TrainRequest:
    """What one `harness train` call trains: the method on the train split of `task`, on `model`."""

    method: str
    task: str
    model: str = ""
    overrides: Mapping[str, Any] | None = None
    data_dir: str | None = None
    skip_invalid: bool = False
    chat_template: bool = False
    seed: int = 0
    device: str = "auto"


def check_request(request: TrainRequest, catalog: Any) -> tuple[str, dict[str, Any]]:
    """The model to load and the method's overrides, after refusing, before any model loads, a
    method that does not train, a task without a train split and hyperparameters the method's
    schema refuses (each a HarnessError naming what is wrong)."""
    from harness.hparams import check_names, check_values, overrides_for
    from harness.runs.plan import check_train_task

    cls = catalog.method_class(request.method)
    if not cls.capabilities.needs_training:
        trained = [n for n in catalog.registry.methods.names() if _trains(catalog, n)]
        raise HarnessError(
            f"method {request.method!r} does not learn from data, so there is nothing to train; "
            f"methods that train: {', '.join(trained) or 'none installed'}"
        )
    check_train_task(catalog, request.task)
    overrides = overrides_for(request.method, request.overrides or {})
    check_names(cls, overrides)
    check_values(cls, overrides, complete=False)
    return request.model or catalog.registry.models.default(), overrides


def _trains(catalog: Any, name: str) -> bool:
    try:
        return catalog.method_class(name).capabilities.needs_training
    except HarnessError:
        return False


def train(request: TrainRequest, catalog: Any, progress: Any) -> float:
    """Train (or find) the editor that `harness run` would fit for `request.method` with
    `--train-task request.task` (or on that task in the other modes) under the same seed; the
    seconds it took. `progress` is a `harness.training.TrainingProgress`."""
    from harness.hparams import resolve_hparams
    from harness.models.load import load_model
    from harness.runs.executor import handed_cases
    from harness.seeding import case_seed
    from harness.training import fit_method

    model, overrides = check_request(request, catalog)
    task = catalog.task_name(request.task)
    cases = (
        catalog.task(request.task)
        .load(split="train", data_dir=request.data_dir, skip_invalid=request.skip_invalid)
        .cases
    )
    chat = request.chat_template or catalog.task(request.task).chat_template
    handle = load_model(model, device=request.device, alias=catalog.registry.models.locate(model))
    method = catalog.method(request.method)
    hparams = resolve_hparams(method, handle, overrides)
    started = time.perf_counter()
    handed = handed_cases(cases, method, handle, chat_template=chat)
    fit_method(method, handle, handed, hparams, progress, seed=case_seed(request.seed, f"fit:{task}"))
    return time.perf_counter() - started


@click.command("train")
@click.option("--method", required=True, help="A method that learns from data (`harness list methods`).")
@click.option("--task", required=True, help="The task (or dataset spec) whose train split it learns from.")
@click.option("--model", help="Model alias, folder or Hugging Face id; default: the default model.")
@click.option(
    "--set",
    "assignments",
    multiple=True,
    metavar="KEY=VALUE",
    help="Hyperparameter override, as `harness run --set` (give a run the same ones to reuse it).",
)
@click.option("--hparams", type=click.Path(dir_okay=False), help="JSON file of hyperparameter overrides.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Folder with the tasks' data files.")
@click.option("--skip-invalid", is_flag=True, help="Skip invalid records of the train split (reported).")
@click.option("--chat-template", is_flag=True, help="Train on prompts in the model's chat template.")
@click.option("--seed", type=int, default=0, show_default=True, help="The run seed `harness run` will use.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--no-progress", is_flag=True, help="A line every tenth of the steps instead of a bar.")
def command(**opts: Any) -> None:
    """Train a method's editor on a task's train split and store it for `harness run`.

    The editor is stored under a key of the model's weights, the method, its hyperparameters, the
    train split's content and the seed, so a run with the same ones reuses it and nothing is trained
    twice; a killed training resumes from its last saved step.
    """
    from harness.hparams import load_hparams_file, parse_assignments
    from harness.tasks import is_spec_path
    from harness.training import TrainingDisplay

    overrides = load_hparams_file(opts["hparams"]) if opts["hparams"] else {}
    overrides.update(parse_assignments(opts["assignments"]))
    request = TrainRequest(
        method=opts["method"],
        task=os.path.abspath(opts["task"]) if is_spec_path(opts["task"]) else opts["task"],
        model=opts["model"] or "",
        overrides=overrides,
        data_dir=os.path.abspath(opts["data_dir"]) if opts["data_dir"] else None,
        skip_invalid=opts["skip_invalid"],
        chat_template=opts["chat_template"],
        seed=opts["seed"],
        device=opts["device"],
    )
    style = "lines" if opts["no_progress"] or not sys.stderr.isatty() else "bars"
    took = train(request, installed_catalog(), TrainingDisplay(sys.stderr, style=style, source=request.task))
    click.echo(f"{request.method} on {request.task}: ready ({took:.1f} s)")
