"""Turning what the user asked for into jobs, and refusing what cannot run before a model loads.

A run is fully described by a `RunConfig` (recorded in the manifest, so `--resume` can rebuild the
very same plan); `build_plan` expands it into `Job`s. Every check that needs only the method's
capabilities and the task's splits happens here, so an impossible request costs no model load.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from harness.ground import HarnessError, MetricInfo
from harness.hparams import check_names, check_values, layer_keys, overrides_for, scope_of
from harness.plugins import did_you_mean
from harness.runs.catalog import Catalog
from harness.runs.suites import Suite

MODES = ("single", "batch", "sequential", "cross-domain")


class PlanError(HarnessError):
    """The requested combination of methods, tasks and mode cannot run."""


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides what a run computes (the device and output folder aside)."""

    model: str = ""
    suite: str | None = None
    methods: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ()
    #: Metrics scored on every task besides the task's own defaults (`--metric`).
    metrics: tuple[str, ...] = ()
    mode: str = ""
    batch_size: int = 0
    eval_at: tuple[int, ...] = ()
    interleave: bool = False
    train_tasks: tuple[str, ...] = ()
    limit: int | None = None
    split: str = "test"
    data_dir: str | None = None
    skip_invalid: bool = False
    alias_policy: str = "first"
    seed: int = 0
    overrides: Mapping[str, Any] = field(default_factory=dict)
    general: tuple[str, ...] = ()
    general_include: str | None = None
    general_limit: int | None = None
    general_edits: int = 5
    #: Put every prompt in the model's chat template (`--chat-template`, or a task's dataset spec).
    chat_template: bool = False

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunConfig:
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise HarnessError(f"run config has unknown fields {unknown}; written by a newer harness?")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)


@dataclass(frozen=True)
class Job:
    """One (model, method, task(s), mode) unit: its cases are edited and scored together.

    `tasks` has one task, except for a continual mixed-domain job, whose cases of several tasks
    are interleaved into one sequence of edits.
    """

    model: str
    method: str
    tasks: tuple[str, ...]
    mode: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    batch_size: int = 1
    eval_at: tuple[int, ...] = ()
    train_task: str | None = None

    @property
    def task_label(self) -> str:
        return "+".join(self.tasks)

    @property
    def key(self) -> str:
        """A stable name for the job, used in cases.jsonl to tell jobs apart (and to resume)."""
        parts = [self.model, self.method, self.task_label, self.mode]
        if self.batch_size > 1:
            parts.append(f"b{self.batch_size}")
        if self.train_task:
            parts.append(f"from-{self.train_task}")
        return "/".join(parts)

    @property
    def undoes(self) -> bool:
        """Whether each edit is taken back before the next (every mode but sequential)."""
        return self.mode != "sequential"


def _merge(config: RunConfig, suite: Suite | None) -> RunConfig:
    """The user's options over the suite's: an option given on the command line always wins."""
    if suite is None:
        return config
    return dataclasses.replace(
        config,
        model=config.model or suite.model or "",
        methods=config.methods or suite.methods,
        tasks=config.tasks or suite.tasks,
        mode=config.mode or suite.mode,
        batch_size=config.batch_size or suite.batch_size,
        eval_at=config.eval_at or suite.eval_at,
        limit=config.limit if config.limit is not None else suite.limit,
    )


def effective_config(config: RunConfig, catalog: Catalog) -> tuple[RunConfig, Suite | None]:
    """The config with suite values and defaults filled in (what the manifest records). The
    default suite and model are those a plugin marks default (`register(..., default=True)`)."""
    if config.suite is None and not config.methods and not config.tasks:
        config = dataclasses.replace(config, suite=catalog.registry.suites.default())
    suite = catalog.suite(config.suite) if config.suite else None
    config = _merge(config, suite)
    config = dataclasses.replace(
        config,
        model=config.model or catalog.registry.models.default(),
        mode=config.mode or ("cross-domain" if config.train_tasks else "single"),
        batch_size=config.batch_size or 1,
        chat_template=config.chat_template or bool(chat_tasks(catalog, config)),
    )
    return config, suite


def chat_tasks(catalog: Catalog, config: RunConfig) -> list[str]:
    """The run's tasks whose prompts are meant for the chat template (`Task.chat_template`, a
    dataset spec's `chat_template`). One such task turns the template on for the whole run, so
    that every job edits, probes and runs lm-eval on prompts of one form."""
    return [t for t in dict.fromkeys((*config.tasks, *config.train_tasks)) if catalog.task(t).chat_template]


def _check_chat_template(catalog: Catalog, config: RunConfig) -> None:
    """Refuse the chat template for a model whose tokenizer has none, read from its files without
    loading it; a model whose files are not readable here is refused when it loads."""
    if not config.chat_template:
        return
    from harness.models.shape import has_chat_template

    alias = catalog.registry.models.locate(config.model)
    if has_chat_template(alias[0] if alias else config.model) is False:
        asked = chat_tasks(catalog, config)
        why = (
            f'asked for by {", ".join(map(repr, asked))}: "chat_template": true'
            if asked
            else "--chat-template"
        )
        raise PlanError(
            f"model {config.model!r} has no chat template in its tokenizer files, so prompts cannot be "
            f"put in one ({why}): use an instruct model, or run without the chat template"
        )


def _check_config(config: RunConfig) -> None:
    if config.mode not in MODES:
        raise PlanError(
            f"unknown mode {config.mode!r}{did_you_mean(config.mode, MODES)}; known: {', '.join(MODES)}"
        )
    if not config.methods:
        raise PlanError("no method to run: pass --method M[,M..] or --suite NAME")
    if not config.tasks:
        raise PlanError("no task to run: pass --task T[,T..] or --suite NAME")
    if config.mode == "single" and config.batch_size > 1:
        raise PlanError(
            "--batch-size needs --mode batch (or sequential); single mode edits one case at a time"
        )
    if config.eval_at and config.mode != "sequential":
        raise PlanError("--eval-at only applies to --mode sequential (edits are undone in other modes)")
    if config.interleave and (config.mode != "sequential" or len(config.tasks) < 2):
        raise PlanError(
            "--interleave mixes several tasks in one sequence: use --mode sequential --task A,B[,..]"
        )
    if config.mode == "cross-domain" and not config.train_tasks:
        raise PlanError("--mode cross-domain needs --train-task T[,T..] (the split the method learns from)")
    if config.train_tasks and config.mode != "cross-domain":
        raise PlanError("--train-task only applies to --mode cross-domain")
    if config.alias_policy not in ("first", "best"):
        raise PlanError(f"--alias-policy must be first or best, got {config.alias_policy!r}")


def _check_method(catalog: Catalog, method: str, config: RunConfig) -> None:
    caps = catalog.method_class(method).capabilities
    if config.batch_size > 1 and not caps.batch:
        raise PlanError(
            f"method {method!r} cannot edit several cases in one call, so --batch-size "
            f"{config.batch_size} is impossible; use --mode single or leave {method!r} out"
        )
    if config.mode == "sequential" and not caps.sequential:
        raise PlanError(
            f"method {method!r} cannot stack edits, so --mode sequential is impossible; "
            f"use --mode single or leave {method!r} out"
        )
    if config.mode == "cross-domain" and not caps.needs_training:
        raise PlanError(
            f"method {method!r} does not learn from data, so --mode cross-domain has nothing to "
            f"transfer; cross-domain runs are for methods that train"
        )


def _check_overrides(catalog: Catalog, config: RunConfig, suite_hparams: Mapping[str, Mapping]) -> None:
    """Hyperparameters are checked against each method's schema now, not when its job starts: a
    typo in `--set` or in a suite must not surface hours into a run. Names and values (types,
    ranges, enums) are checked, and layer indices against the model's depth, which is read from
    its config without loading it (only when a layer hyperparameter is given)."""
    for key in config.overrides:
        scope, _ = scope_of(key)
        if scope and scope not in config.methods:
            raise PlanError(
                f"--set {key}: method {scope!r} is not in this run (methods: {', '.join(config.methods)})"
            )
    depth = cache(lambda: _model_depth(catalog, config.model))
    for method in config.methods:
        hint = "; to give a hyperparameter to one method only, write --set METHOD.KEY=VALUE"
        values = {**suite_hparams.get(method, {}), **overrides_for(method, config.overrides)}
        cls = catalog.method_class(method)
        check_names(cls, values, hint if len(config.methods) > 1 else "")
        layered = any(key in values for key in layer_keys(cls.hparams_schema))
        check_values(cls, values, complete=False, num_layers=depth() if layered else None, model=config.model)


def _model_depth(catalog: Catalog, model: str) -> int | None:
    """The model's number of layers from its config (no weights loaded); None when not knowable."""
    from harness.models.shape import count_layers

    alias = catalog.registry.models.locate(model)
    return count_layers(alias[0] if alias else model)


def task_metrics(catalog: Catalog, config: RunConfig, task: str) -> tuple[str, ...]:
    """The metrics a task's cases are scored with: the task's defaults, then those the run adds."""
    return tuple(dict.fromkeys((*catalog.task(task).metrics, *config.metrics)))


def metric_info(catalog: Catalog, config: RunConfig) -> dict[str, MetricInfo]:
    """Every metric of the run by name, with what its numbers mean (recorded in the summary).
    Loading each metric here is the plan-time check of the names: an unknown one is a HarnessError
    naming the known metrics, a broken plugin module fails now, before any model loads."""
    names = dict.fromkeys(name for task in config.tasks for name in task_metrics(catalog, config, task))
    return {name: catalog.registry.metrics.load(name).info for name in sorted(names)}


def check_train_task(catalog: Catalog, task: str, method: str | None = None) -> None:
    """Refuse a task without a train split as what a method learns from: the `--train-task` of a
    cross-domain run or of `harness train` (`method` None), or the task a trained method edits in the
    other modes, whose own train split it learns from. The message names the splits there are."""
    splits = catalog.task_splits(task)
    if "train" in splits:
        return
    have = f"task {task!r} has no train split (splits: {', '.join(splits)})"
    if method is None:
        raise PlanError(f"{have}, so no method can learn from it (--train-task, harness train)")
    raise PlanError(
        f"method {method!r} learns from the train split of the task it edits, and {have}; edit a task "
        f"that has one, or use --mode cross-domain --train-task T to learn from another task"
    )


def build_plan(config: RunConfig, catalog: Catalog, suite: Suite | None = None) -> list[Job]:
    """The jobs of an effective config, in a fixed order (model, method, task)."""
    _check_config(config)
    catalog.registry.models.check_spec(config.model)
    for method in config.methods:
        _check_method(catalog, method, config)
    for task in (*config.tasks, *config.train_tasks):
        catalog.task_splits(task)
    for task in config.train_tasks:
        check_train_task(catalog, task)
    for method in config.methods:
        if config.mode != "cross-domain" and catalog.method_class(method).capabilities.needs_training:
            for task in config.tasks:
                check_train_task(catalog, task, method)
    excluded = suite.excluded if suite is not None else {}
    suite_hparams = suite.hparams if suite is not None else {}
    _check_overrides(catalog, config, suite_hparams)
    metric_info(catalog, config)  # refuses an unknown or broken metric now
    _check_chat_template(catalog, config)

    def job(method: str, tasks: Sequence[str], train_task: str | None = None) -> Job:
        overrides = {**suite_hparams.get(method, {}), **overrides_for(method, config.overrides)}
        return Job(
            model=config.model,
            method=method,
            tasks=tuple(catalog.task_name(t) for t in tasks),
            mode=config.mode,
            overrides=overrides,
            batch_size=config.batch_size,
            eval_at=config.eval_at,
            train_task=catalog.task_name(train_task) if train_task else None,
        )

    jobs: list[Job] = []
    for method in config.methods:
        tasks = [t for t in config.tasks if (method, t) not in excluded]
        if config.interleave:
            jobs.append(job(method, tasks))
        elif config.mode == "cross-domain":
            jobs.extend(job(method, [t], source) for source in config.train_tasks for t in tasks)
        else:
            jobs.extend(job(method, [t]) for t in tasks)
    if not jobs:
        raise PlanError("the suite's exclusions leave no job to run")
    return jobs


def describe_plan(jobs: Sequence[Job], estimates: Mapping[str, Any] | None = None) -> str:
    """One line per job; with `estimates` (job key -> `harness.runs.memory.MemoryEstimate` or
    None), each followed by its device memory estimate."""
    if estimates is None:
        return "\n".join(f"  {j.key}" for j in jobs)
    return "\n".join(
        f"  {j.key}  {estimates[j.key] or 'memory not known before the model loads'}" for j in jobs
    )
