"""`harness run`: plan, edit, evaluate, write the run directory, print the results table."""

from __future__ import annotations

import datetime as dt
import os
import sys
import time
from typing import Any

import click
from click.core import ParameterSource

from harness.commands import Choice, installed_catalog
from harness.ground import HarnessError
from harness.hparams import load_hparams_file, parse_assignments

#: Options that define what a run computes; `--resume` takes them from the manifest instead.
PLAN_OPTIONS = (
    "suite",
    "method",
    "task",
    "metric",
    "model",
    "mode",
    "batch_size",
    "eval_at",
    "interleave",
    "limit",
    "data_dir",
    "train_task",
    "split",
    "skip_invalid",
    "alias_policy",
    "seed",
    "assignments",
    "hparams",
    "general",
    "general_include",
    "general_limit",
    "general_edits",
    "chat_template",
)


def _names(values: tuple[str, ...]) -> tuple[str, ...]:
    """`--method a,b --method c` -> (a, b, c)."""
    return tuple(dict.fromkeys(n.strip() for v in values for n in v.split(",") if n.strip()))


def _absolute(path: str | None) -> str | None:
    """Folders are recorded absolute, so that `--resume` from another directory finds them."""
    return os.path.abspath(path) if path else None


def _tasks(values: tuple[str, ...]) -> tuple[str, ...]:
    """Task names, with dataset spec paths made absolute (recorded, like folders, for `--resume`)."""
    from harness.tasks import is_spec_path

    return tuple(os.path.abspath(t) if is_spec_path(t) else t for t in _names(values))


def _counts(text: str | None) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        values = tuple(int(n) for n in text.split(",") if n.strip())
    except ValueError:
        raise HarnessError(f"--eval-at expects edit counts like 10,100,500, got {text!r}") from None
    if any(n < 1 for n in values):
        raise HarnessError(f"--eval-at counts must be positive, got {text!r}")
    return values


def _resumed_folder(resume: str, out: str | None) -> str:
    """The run directory of `--resume RUN_DIR` or `--out RUN_DIR --resume`."""
    if resume and out and os.path.abspath(resume) != os.path.abspath(out):
        raise HarnessError(f"--resume {resume} and --out {out} name two run directories; give one")
    if not (resume or out):
        raise HarnessError("--resume needs the run directory to continue: harness run --resume RUN_DIR")
    return resume or out


def _cluster(opts: dict) -> Any:
    """The `RayOptions` of `--executor ray`, or None (Ray is then never imported)."""
    if opts["executor"] != "ray":
        given = [name for name in ("address", "gpus_per_job") if opts[name]]
        if given:
            names = ", ".join(f"--{n.replace('_', '-')}" for n in given)
            raise HarnessError(f"{names} only apply with --executor ray")
        return None
    from harness.runs.ray_executor import RayOptions

    return RayOptions(installed_catalog, address=opts["address"], gpus_per_job=opts["gpus_per_job"])


@click.command("run")
@click.option("--suite", help="A registered suite; default: the one `harness list suites` marks.")
@click.option("--method", multiple=True, help="Method name(s), comma-separated.")
@click.option("--task", multiple=True, help="Task name(s) or dataset spec path(s), comma-separated.")
@click.option(
    "--metric",
    multiple=True,
    help="Metric name(s), comma-separated, scored on every task besides its defaults.",
)
@click.option(
    "--model", help="Model alias, folder or Hugging Face id; default: the one `harness list models` marks."
)
@click.option("--mode", type=Choice(["single", "batch", "sequential", "cross-domain"]))
@click.option("--batch-size", type=click.IntRange(min=1), help="Cases per edit (batch, sequential).")
@click.option("--eval-at", help="Sequential checkpoints: re-score every edited case after N edits.")
@click.option("--interleave", is_flag=True, help="Sequential: mix the tasks' cases into one sequence.")
@click.option("--limit", type=click.IntRange(min=1), help="First N cases of each task.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Folder with the tasks' data files.")
@click.option("--train-task", multiple=True, help="Cross-domain: task(s) whose train split the method fits.")
@click.option("--split", default="test", show_default=True, help="The split edited and scored.")
@click.option(
    "--skip-invalid",
    is_flag=True,
    help="Skip invalid records and cases a method cannot edit (reported) instead of failing.",
)
@click.option("--alias-policy", type=Choice(["first", "best"]), default="first", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--set",
    "assignments",
    multiple=True,
    metavar="KEY=VALUE",
    help="Hyperparameter override; METHOD.KEY=VALUE gives it to one method of the run.",
)
@click.option("--hparams", type=click.Path(dir_okay=False), help="JSON file of hyperparameter overrides.")
@click.option("--general", multiple=True, help="lm-eval task(s) for the general-capability check.")
@click.option("--general-include", type=click.Path(file_okay=False), help="Folder of lm-eval task YAMLs.")
@click.option("--general-limit", type=click.IntRange(min=1), help="First N documents of each lm-eval task.")
@click.option(
    "--general-edits",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Sequential edits before the general check in single and batch modes.",
)
@click.option(
    "--chat-template",
    is_flag=True,
    help="Put every prompt (edits, probes, lm-eval) in the model's chat template; off as in the study.",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option(
    "--executor",
    type=Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="Run the jobs in this process, or on a Ray cluster (the `ray` extra; docs/ray.md).",
)
@click.option("--address", help="Ray: the cluster to join (`ray start --head` says it); default: a new one.")
@click.option(
    "--gpus-per-job",
    type=click.FloatRange(min=0),
    default=0,
    show_default=True,
    help="Ray: GPUs each worker holds; 0 runs on CPUs.",
)
@click.option("--out", type=click.Path(file_okay=False), help="Run directory; default runs/<timestamp>.")
@click.option(
    "--resume",
    is_flag=False,
    flag_value="",
    default=None,
    metavar="[RUN_DIR]",
    help="Continue the run in RUN_DIR (or --out); its manifest gives the config.",
)
@click.option(
    "--dry-run", is_flag=True, help="Print the jobs and their memory estimates and exit (nothing is loaded)."
)
@click.option(
    "--no-progress",
    is_flag=True,
    help="A plain line per edit instead of progress bars (the default when stderr is no terminal).",
)
@click.pass_context
def command(ctx: click.Context, **opts) -> None:
    """Edit and evaluate: every method on every task, in one mode, on one model.

    With no options this runs the default suite on the default model (`harness list suites`,
    `harness list models`: the plugins that ship them mark them default).
    """
    from harness.runs.leaderboard import merge, render
    from harness.runs.plan import RunConfig, describe_plan
    from harness.runs.runner import RunInterrupted, execute, plan

    resume = opts["resume"] is not None
    if resume:
        opts["out"] = _resumed_folder(opts["resume"], opts["out"])
        given = [
            f"--{n.replace('_', '-')}"
            for n in PLAN_OPTIONS
            if ctx.get_parameter_source(n) == ParameterSource.COMMANDLINE
        ]
        if given:
            raise HarnessError(f"--resume takes the run's config from its manifest; drop {', '.join(given)}")
    overrides = load_hparams_file(opts["hparams"]) if opts["hparams"] else {}
    overrides.update(parse_assignments(opts["assignments"]))
    config = RunConfig(
        model=opts["model"] or "",
        suite=opts["suite"],
        methods=_names(opts["method"]),
        tasks=_tasks(opts["task"]),
        metrics=_names(opts["metric"]),
        mode=opts["mode"] or "",
        batch_size=opts["batch_size"] or 0,
        eval_at=_counts(opts["eval_at"]),
        interleave=opts["interleave"],
        train_tasks=_tasks(opts["train_task"]),
        limit=opts["limit"],
        split=opts["split"],
        data_dir=_absolute(opts["data_dir"]),
        skip_invalid=opts["skip_invalid"],
        alias_policy=opts["alias_policy"],
        seed=opts["seed"],
        overrides=overrides,
        general=_names(opts["general"]),
        general_include=_absolute(opts["general_include"]),
        general_limit=opts["general_limit"],
        general_edits=opts["general_edits"],
        chat_template=opts["chat_template"],
    )
    cluster = _cluster(opts)
    catalog = installed_catalog()
    if opts["dry_run"]:
        from harness.runs.memory import dtype_bytes_for, estimate_jobs

        effective, jobs = plan(config, catalog)
        estimates = estimate_jobs(jobs, catalog, dtype_bytes_for(opts["device"], opts["gpus_per_job"]))
        click.echo(f"{len(jobs)} jobs on {effective.model}:\n{describe_plan(jobs, estimates)}")
        return
    out = opts["out"] or f"runs/{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    if opts["no_progress"] or not sys.stderr.isatty():
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # its weight-loading bar, for logs and pipes
    started = time.perf_counter()
    try:
        outcome = execute(
            config,
            out,
            resume=resume,
            device=opts["device"],
            catalog=catalog,
            progress="lines" if opts["no_progress"] else True,
            cluster=cluster,
        )
    except RunInterrupted as stop:
        click.echo(f"\nharness: {stop}", err=True)
        ctx.exit(130)
    layout = "cross-domain" if outcome.summary.get("cross_domain") else "knowedit"
    click.echo(render(merge([outcome.summary]), "text", layout))
    click.echo(
        f"\n{len(outcome.jobs)} jobs in {time.perf_counter() - started:.1f} s; results in {out}/ "
        f"(every sub-score: harness leaderboard {out} --layout wide)"
    )
