"""Seconds per edit of editing methods on a model (default: smollm2-135m on the CPU), and the time
to compute second-moment statistics, with the machine and library versions.

    python benchmarks/edit_speed.py [--methods rome,grace,...] [--cases 5] [--model smollm2-135m]
                                    [--set KEY=VALUE | METHOD.KEY=VALUE ...] [--suite NAME]
                                    [--fresh-cache] [--device cuda --dtype bfloat16] [--verify]
                                    [--baseline CHECKOUT]

Any registered method can be named; cases are the first real ZsRE records when the KnowEdit data is
found (--data-dir), else two built-in facts. Work that a real run caches (context templates,
second-moment statistics, IKE's embeddings of its train split) is done and timed once before the
edits; the first edit is reported apart from the rest. Each edit is seeded as `harness run` seeds
it and undone before the next, so every edit starts from the original model. With `--verify` every
undo also checks that all parameters are bit-identical to before the edit (the GPU check uses it).
The bare operation, one forward pass of the edit prompts, is timed in the same run, so the seconds
per edit can be read as a multiple of it. `--suite NAME` starts from a suite's hyperparameters
(`knowedit-quick`: those of the default `harness run`).

`--baseline CHECKOUT` compares with other code (e.g. `git worktree add /tmp/base COMMIT`): two
worker processes, one importing the harness from the checkout, one from this tree, take the same
edits in turn, case by case (the order swapped every case, so that a change of load on a shared
machine falls on both alike), and each edit is scored after it (edit success, generalization);
the table gives both codes' CPU and wall seconds per edit (`apply` alone), their ratio and scores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import torch
from tabulate import tabulate

from harness.api import EditCase, EvalOptions, Method
from harness.hparams import overrides_for, parse_assignments, resolve_hparams
from harness.models.handle import ModelHandle
from harness.models.load import load_model
from harness.plugins import get_registry
from harness.seeding import case_seed, seed_everything
from harness.testing import Evaluator
from harness_plugins.rome_family.second_moment import second_moments, stats_config
from harness_plugins.rome_family.templates import context_templates

FALLBACK = [
    EditCase(case_id="f0", prompt="The capital of France is", target_new="Berlin", subject="France"),
    EditCase(
        case_id="f1", prompt="The Eiffel Tower is located in", target_new="Rome", subject="Eiffel Tower"
    ),
]
METHODS = "ft-l,ft-m,rome,memit,ike,ice,lora,adalora,grace"
TRAIN_CASES = 200
#: What `--baseline` scores after each edit.
SCORES = ("edit_succ", "generalization")


def zsre(data_dir: Path, start: int, n: int) -> list[EditCase]:
    """Real ZsRE records from the KnowEdit folder, or the built-in facts when it is absent."""
    from harness.testing import resolve_task

    if not (data_dir / "ZsRE").is_dir():
        return FALLBACK[start : start + n]
    return list(resolve_task("zsre").load(data_dir=str(data_dir)).cases[start : start + n])


def uses_statistics(hparams: dict) -> bool:
    """MEMIT always reads C; ROME only with its covariance adjustment."""
    return "mom2_samples" in hparams and hparams.get("mom2_adjustment", True)


def prepare(handle: ModelHandle, method: Method, hparams: dict, data_dir: Path, n: int) -> list[str]:
    """The once-per-model work of a method, timed: statistics and a train split's index (and,
    untimed, the context templates a run caches)."""
    notes = []
    if "context_templates" in hparams:
        context_templates(handle, hparams["context_templates"])
    if uses_statistics(hparams):
        start = time.perf_counter()
        second_moments(handle, hparams["layers"], stats_config(hparams), progress=True)
        notes.append(f"statistics for layers {hparams['layers']}: {time.perf_counter() - start:.1f} s")
    if method.capabilities.needs_training:
        train = zsre(data_dir, n, TRAIN_CASES) or FALLBACK
        start = time.perf_counter()
        method.fit(handle, train, hparams)
        notes.append(f"fit on {len(train)} train cases: {time.perf_counter() - start:.1f} s")
    return notes


def time_edits(handle: ModelHandle, method: Method, hparams: dict, cases: list[EditCase]) -> list[float]:
    times = []
    for case in cases:
        seed_everything(case_seed(0, case.case_id))
        start = time.perf_counter()
        method.apply(handle, [case], hparams).undo()
        times.append(time.perf_counter() - start)
    return times


def bare_forward_s(handle: ModelHandle, cases: list[EditCase], repeats: int = 5) -> float:
    """Seconds of one batched forward pass over the cases' prompts (the median of `repeats`)."""
    from harness.api import encode_prompts

    batch = encode_prompts(handle.tokenizer, [c.prompt for c in cases]).to(handle.device)
    times = []
    with torch.no_grad():
        for _ in range(repeats + 1):
            if handle.device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            handle.model(**batch.model_inputs())
            if handle.device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    return sorted(times[1:])[repeats // 2]


def method_hparams(handle: ModelHandle, name: str, args: argparse.Namespace) -> tuple[Method, dict]:
    """The method and its hyperparameters: the suite's (`--suite`), then `--set`, over the defaults."""
    from harness.runs.catalog import Catalog

    method = get_registry().load("methods", name)()
    suite = Catalog(get_registry()).suite(args.suite).hparams.get(name, {}) if args.suite else {}
    overrides = {**suite, **overrides_for(name, parse_assignments(args.set))}
    return method, resolve_hparams(method, handle, overrides)


def load(args: argparse.Namespace) -> tuple[ModelHandle, list[EditCase]]:
    torch.set_num_threads(args.threads)
    alias = get_registry().models.locate(args.model)
    handle = load_model(args.model, device=args.device, dtype=args.dtype, alias=alias, verify=args.verify)
    handle.fingerprint()
    return handle, zsre(args.data_dir, 0, args.cases)


def worker(args: argparse.Namespace) -> None:
    """Serve `--baseline`'s parent: per stdin line `{"method", "case"}` one edit, seeded as a run
    seeds it, timed (CPU and wall seconds of `apply`), scored and undone; one JSON line back."""
    handle, cases = load(args)
    evaluator = Evaluator(handle, list(SCORES), EvalOptions(use_cache=False))
    ready: dict[str, tuple[Method, dict, list[str]]] = {}
    print(json.dumps({"ready": len(cases)}), flush=True)
    for line in sys.stdin:
        ask = json.loads(line)
        if ask["method"] not in ready:
            method, hparams = method_hparams(handle, ask["method"], args)
            ready[ask["method"]] = (
                method,
                hparams,
                prepare(handle, method, hparams, args.data_dir, args.cases),
            )
        method, hparams, notes = ready[ask["method"]]
        case = cases[ask["case"]]
        seed_everything(case_seed(0, case.case_id))
        cpu, wall = time.process_time(), time.perf_counter()
        edit = method.apply(handle, [case], hparams)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        (scores,) = evaluator.evaluate([case], {case.case_id: edit.context})
        edit.undo()
        reply = {"cpu_s": cpu, "wall_s": wall, "notes": notes, **{k: scores.get(k) for k in SCORES}}
        print(json.dumps(reply), flush=True)


class Worker:
    """A `--worker` process of this script, importing the harness from `code` (None: this tree)."""

    def __init__(self, code: Path | None, argv: list[str]) -> None:
        env = dict(os.environ)
        if code is not None:  # the checkout's packages under their installed names, ahead of this tree
            links = Path(tempfile.mkdtemp(prefix="edit-speed-code-"))
            (links / "harness").symlink_to(code / "harness")
            (links / "harness_plugins").symlink_to(code / "plugins")
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(links), env.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--worker", *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.reply()  # loaded

    def reply(self) -> dict:
        for line in self.process.stdout:
            if line.startswith("{"):
                return json.loads(line)
        raise RuntimeError(f"worker ended with status {self.process.wait()}")

    def edit(self, method: str, case: int) -> dict:
        self.process.stdin.write(json.dumps({"method": method, "case": case}) + "\n")
        self.process.stdin.flush()
        return self.reply()


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def compare(args: argparse.Namespace, argv: list[str]) -> None:
    """The same edits by the baseline's code and this tree's, interleaved; one row per method."""
    workers = {"baseline": Worker(args.baseline.resolve(), argv), "current": Worker(None, argv)}
    table = []
    for name in args.methods.split(","):
        done: dict[str, list[dict]] = {label: [] for label in workers}
        for case in range(args.cases):
            order = list(workers) if case % 2 == 0 else list(reversed(workers))
            for label in order:
                done[label].append(workers[label].edit(name, case))
        base, new = (done[label] for label in workers)
        row = [name]
        for key in ("cpu_s", "wall_s"):
            row += [round(mean([r[key] for r in base]), 2), round(mean([r[key] for r in new]), 2)]
        row.insert(3, round(row[1] / row[2], 2))
        for key in SCORES:
            row += [round(100 * mean([r[key] for r in rows]), 1) for rows in (base, new)]
        table.append(row)
        print(f"{name}: {row}", flush=True)
    for process in (w.process for w in workers.values()):
        process.stdin.close()
        process.wait()
    headers = ["method", "CPU s base", "CPU s new", "CPU ratio", "wall s base", "wall s new"]
    headers += [f"{key} {label}" for key in SCORES for label in ("base", "new")]
    print(tabulate(table, headers=headers, tablefmt="github"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--methods", default=METHODS)
    parser.add_argument("--cases", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).parents[2] / "shared/data/knowedit")
    parser.add_argument("--set", action="append", default=[], help="hparam override (METHOD.KEY for one)")
    parser.add_argument("--suite", help="start from this suite's hparams (knowedit-quick: the default run's)")
    parser.add_argument("--fresh-cache", action="store_true", help="time cached work from an empty cache")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None, help="float32, bfloat16, float16 (default: the model's)")
    parser.add_argument("--verify", action="store_true", help="check every undo restores all weights")
    parser.add_argument("--baseline", type=Path, help="a checkout of the code to compare with, interleaved")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    argv = list(sys.argv[1:])
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    if args.fresh_cache:
        os.environ["HARNESS_HOME"] = tempfile.mkdtemp(prefix="edit-speed-")
    packages = ", ".join(f"{p} {version(p)}" for p in ("knowedit-harness", "torch", "transformers", "peft"))
    cpus = f"{os.cpu_count()} CPUs, {args.threads} torch threads"
    print(f"machine: {platform.platform()}, {platform.machine()}, {cpus}")
    print(f"python {platform.python_version()}, {packages}")
    print(f"load average (1, 5, 15 min) at the start: {os.getloadavg()}")
    if args.baseline:
        compare(args, [a for a in argv if a != "--fresh-cache"])
        print(f"load average (1, 5, 15 min) at the end: {os.getloadavg()}")
        return
    handle, cases = load(args)
    print(
        f"model {args.model} ({handle.adapter.family}, {handle.dtype}, {handle.device}), {len(cases)} cases"
    )
    print(
        f"bare forward pass of the {len(cases)} edit prompts: {bare_forward_s(handle, cases) * 1e3:.2f} ms\n"
    )
    table = []
    for name in args.methods.split(","):
        method, hparams = method_hparams(handle, name, args)
        notes = prepare(handle, method, hparams, args.data_dir, args.cases)
        times = time_edits(handle, method, hparams, cases)
        rest = times[1:] or times
        table.append([name, f"{sum(rest) / len(rest):.2f}", f"{times[0]:.2f}", len(times), "; ".join(notes)])
        print(f"{name}: {table[-1][1]} s per edit", flush=True)
    print()
    print(tabulate(table, headers=["method", "s per edit", "first edit s", "edits", "once per model"]))


if __name__ == "__main__":
    main()
