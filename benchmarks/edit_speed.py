"""Seconds per edit of editing methods on a model (default: smollm2-135m on the CPU), and the time
to compute second-moment statistics, with the machine and library versions.

    python benchmarks/edit_speed.py [--methods rome,grace,...] [--cases 5] [--model smollm2-135m]
                                    [--set KEY=VALUE | METHOD.KEY=VALUE ...] [--fresh-cache]
                                    [--device cuda --dtype bfloat16] [--verify]

Any registered method can be named; cases are the first real ZsRE records when the KnowEdit data is
found (--data-dir), else two built-in facts. Work that a real run caches (context templates,
second-moment statistics, IKE's embeddings of its train split) is done and timed once before the
edits; the first edit is reported apart from the rest. Each edit is seeded as `harness run` seeds
it and undone before the next, so every edit starts from the original model. With `--verify` every
undo also checks that all parameters are bit-identical to before the edit (the GPU check uses it).
The bare operation, one forward pass of the edit prompts, is timed in the same run, so the seconds
per edit can be read as a multiple of it.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import torch
from tabulate import tabulate

from harness.api import EditCase, Method
from harness.hparams import overrides_for, parse_assignments, resolve_hparams
from harness.models.handle import ModelHandle
from harness.models.load import load_model
from harness.plugins import get_registry
from harness.seeding import case_seed, seed_everything
from harness_plugins.rome_family.second_moment import second_moments, stats_config

FALLBACK = [
    EditCase(case_id="f0", prompt="The capital of France is", target_new="Berlin", subject="France"),
    EditCase(
        case_id="f1", prompt="The Eiffel Tower is located in", target_new="Rome", subject="Eiffel Tower"
    ),
]
METHODS = "ft-l,ft-m,rome,memit,ike,ice,lora,adalora,grace"
TRAIN_CASES = 200


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
    """The once-per-model work of a method, timed: statistics and a train split's index."""
    notes = []
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--methods", default=METHODS)
    parser.add_argument("--cases", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).parents[2] / "shared/data/knowedit")
    parser.add_argument("--set", action="append", default=[], help="hparam override (METHOD.KEY for one)")
    parser.add_argument("--fresh-cache", action="store_true", help="time cached work from an empty cache")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None, help="float32, bfloat16, float16 (default: the model's)")
    parser.add_argument("--verify", action="store_true", help="check every undo restores all weights")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.fresh_cache:
        os.environ["HARNESS_HOME"] = tempfile.mkdtemp(prefix="edit-speed-")
    packages = ", ".join(f"{p} {version(p)}" for p in ("knowedit-harness", "torch", "transformers", "peft"))
    cpus = f"{os.cpu_count()} CPUs, {args.threads} torch threads"
    print(f"machine: {platform.platform()}, {platform.machine()}, {cpus}")
    print(f"python {platform.python_version()}, {packages}")
    alias = get_registry().models.locate(args.model)
    handle = load_model(args.model, device=args.device, dtype=args.dtype, alias=alias, verify=args.verify)
    handle.fingerprint()
    cases = zsre(args.data_dir, 0, args.cases)
    print(
        f"model {args.model} ({handle.adapter.family}, {handle.dtype}, {handle.device}), {len(cases)} cases"
    )
    print(
        f"bare forward pass of the {len(cases)} edit prompts: {bare_forward_s(handle, cases) * 1e3:.2f} ms\n"
    )
    overrides = parse_assignments(args.set)
    table = []
    for name in args.methods.split(","):
        method = get_registry().load("methods", name)()
        hparams = resolve_hparams(method, handle, overrides_for(name, overrides))
        notes = prepare(handle, method, hparams, args.data_dir, args.cases)
        times = time_edits(handle, method, hparams, cases)
        rest = times[1:] or times
        table.append([name, f"{sum(rest) / len(rest):.2f}", f"{times[0]:.2f}", len(times), "; ".join(notes)])
        print(f"{name}: {table[-1][1]} s per edit", flush=True)
    print()
    print(tabulate(table, headers=["method", "s per edit", "first edit s", "edits", "once per model"]))


if __name__ == "__main__":
    main()
