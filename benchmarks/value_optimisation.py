"""ROME and MEMIT with the reference code's value optimisation against the harness defaults, case by
case on real ZsRE records (issue 23; docs/methods.md, "The value optimisation").

    python benchmarks/value_optimisation.py [--cases 20] [--methods rome,memit] [--model smollm2-135m]
                                            [--base main-job|defaults] [--data-dir DIR]

Each method runs twice over the same cases: once with the harness defaults of the four value
choices, once with the reference code's (`REFERENCE`). `--base main-job` (the default) starts from
the main job's hyperparameters (the knowedit-mini suite's CPU settings, as the slow tests do),
`--base defaults` from the method's schema defaults (the reference's templates and `v_lr`). Each
edit is seeded as `harness run` seeds it, scored by the evaluator, and undone before the next. For
every case it prints edit success, generalization and locality (ZsRE's own locality probes, about
the edited subject), how many times the loss was evaluated (at most `v_num_grad_steps`; MEMIT: for
its one edit), and the seconds the edit took; then the means. Prints the machine and versions.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import os
import platform
import time
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
from tabulate import tabulate

from harness.api import EditCase
from harness.evaluation.options import EvalOptions
from harness.hparams import resolve_hparams
from harness.runs.catalog import Catalog
from harness.seeding import case_seed, seed_everything
from harness.testing import Evaluator, get_registry, load_model, resolve_task

#: The reference code's value optimisation (ROME's compute_v.py, MEMIT's compute_z.py).
REFERENCE = {
    "kl_position": "subject_last",
    "kl_direction": "edited_original",
    "weight_decay_form": "norm",
    "stop_on": "total_loss",
}
METRICS = ("edit_succ", "generalization", "locality")
SCORES = ("edit_succ", "generalization", "locality")


@contextlib.contextmanager
def counting_evaluations(method_module: Any) -> Iterator[list[int]]:
    """Counts, per call of the method module's `optimize_value`, the loss evaluations it made, by
    passing it a trace. The list gets one entry per optimised value."""
    counts: list[int] = []
    original = method_module.optimize_value

    @functools.wraps(original)
    def traced(*args: Any, **kwargs: Any) -> torch.Tensor:
        trace: list = []
        delta = original(*args, **kwargs, trace=trace)
        counts.append(len(trace))
        return delta

    method_module.optimize_value = traced
    try:
        yield counts
    finally:
        method_module.optimize_value = original


def run(handle, method_name: str, hparams: dict, cases: list[EditCase], evaluator: Evaluator) -> list[dict]:
    """Single edits, each scored then undone: one row per case."""
    method = get_registry().load("methods", method_name)()
    module = importlib.import_module(type(method).__module__)
    rows = []
    with counting_evaluations(module) as counts:
        for case in cases:
            seed_everything(case_seed(0, case.case_id))
            start = time.perf_counter()
            edit = method.apply(handle, [case], hparams)
            seconds = time.perf_counter() - start
            (scores,) = evaluator.evaluate([case], {case.case_id: edit.context})
            edit.undo()
            rows.append({**{k: scores[k] for k in SCORES}, "evals": counts[-1], "s": seconds})
    return rows


def machine(load_at_start: tuple[float, ...]) -> str:
    loads = [", ".join(f"{x:.2f}" for x in load) for load in (load_at_start, os.getloadavg())]
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.system()} "
        f"{platform.release()}, torch threads {torch.get_num_threads()}, load average (1, 5, 15 min) "
        f"{loads[0]} at the start, {loads[1]} at the end; "
        f"Python {platform.python_version()}, torch {version('torch')}, "
        f"transformers {version('transformers')}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--methods", default="rome,memit")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--base", choices=["main-job", "defaults"], default="main-job")
    parser.add_argument(
        "--data-dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "knowedit"
    )
    args = parser.parse_args()
    load_at_start = os.getloadavg()

    handle = load_model(args.model, device="cpu")
    cases = list(resolve_task("zsre").load(data_dir=str(args.data_dir)).cases[: args.cases])
    evaluator = Evaluator(handle, list(METRICS), EvalOptions(use_cache=False))
    evaluator.prepare(cases)
    pre = evaluator.evaluate_pre(cases)
    base = Catalog(get_registry()).suite("knowedit-mini").hparams if args.base == "main-job" else {}

    means = []
    mean_headers = ["method", "value choices", "ES", "gen", "loc", "evals", "at cap", "s per edit"]
    for method_name in args.methods.split(","):
        method = get_registry().load("methods", method_name)()
        results, cap = {}, {}
        for label, choices in (("harness", {}), ("reference", REFERENCE)):
            hparams = resolve_hparams(method, handle, {**base.get(method_name, {}), **choices})
            results[label] = run(handle, method_name, hparams, cases, evaluator)
            cap[label] = hparams["v_num_grad_steps"]
            shown = {k: hparams[k] for k in ("v_lr", "context_templates", *REFERENCE)}
            print(f"{method_name} {label}: {shown}", flush=True)
        table = []
        for i, case in enumerate(cases):
            row = [case.case_id, *(round(100 * pre[i][k], 1) for k in SCORES[:2])]
            for label in results:
                r = results[label][i]
                row += [*(round(100 * r[k], 1) for k in SCORES), r["evals"]]
            table.append(row)
        headers = ["case", "pre ES", "pre gen"] + [
            f"{label} {col}" for label in results for col in ("ES", "gen", "loc", "evals")
        ]
        print(f"\n{method_name}, per case (scores x100):\n")
        print(tabulate(table, headers=headers, tablefmt="github"))
        for label, rows in results.items():
            n = len(rows)
            means.append(
                [
                    method_name,
                    label,
                    *(round(100 * sum(r[k] for r in rows) / n, 1) for k in SCORES),
                    round(sum(r["evals"] for r in rows) / n, 1),
                    sum(r["evals"] == cap[label] for r in rows),
                    round(sum(r["s"] for r in rows) / n, 1),
                ]
            )
        print(f"\n{method_name}, means:\n")  # now, so that a later failure loses nothing
        print(tabulate(means[-len(results) :], headers=mean_headers, tablefmt="github"), flush=True)
    print("\nMeans:\n")
    print(tabulate(means, headers=mean_headers, tablefmt="github"))
    print(f"\n{len(cases)} cases, base hparams: {args.base}; {machine(load_at_start)}")


if __name__ == "__main__":
    main()
