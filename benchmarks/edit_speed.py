"""Seconds per edit of editing methods on a model (default: smollm2-135m on the CPU), and the time
to compute second-moment statistics, with the machine and library versions.

    python benchmarks/edit_speed.py [--methods rome,grace,...] [--cases 5] [--model smollm2-135m]
                                    [--set KEY=VALUE ...]

Any registered method can be named; cases are the first real ZsRE records when the KnowEdit data is
found (--data-dir), else a few built-in facts. Context templates and statistics are computed (and
timed) once before the edits, as a real run would reuse them from the cache.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch
import transformers

from harness.api import EditCase
from harness.hparams import parse_assignments, resolve_hparams
from harness.models.load import load_model
from harness.plugins import get_registry
from harness.second_moment import StatsConfig, second_moments
from harness.seeding import case_seed, seed_everything

FALLBACK = [
    EditCase(case_id="f0", prompt="The capital of France is", target_new="Berlin", subject="France"),
    EditCase(
        case_id="f1", prompt="The Eiffel Tower is located in", target_new="Rome", subject="Eiffel Tower"
    ),
]


def load_cases(data_dir: Path, n: int) -> list[EditCase]:
    path = data_dir / "ZsRE" / "ZsRE-test-all.json"
    if not path.exists():
        return FALLBACK[:n]
    records = json.loads(path.read_text())[:n]
    return [
        EditCase(case_id=f"zsre-{i}", prompt=r["prompt"], target_new=r["target_new"], subject=r["subject"])
        for i, r in enumerate(records)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--methods", default="ft-l,ft-m,rome,memit,ike,ice,lora,adalora,grace")
    parser.add_argument("--cases", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).parents[2] / "shared/data/knowedit")
    parser.add_argument("--set", action="append", default=[], help="hparam override for every method")
    parser.add_argument("--fresh-cache", action="store_true", help="time statistics from an empty cache")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.fresh_cache:
        import os

        os.environ["HARNESS_HOME"] = tempfile.mkdtemp(prefix="edit-speed-")
    cpu = platform.processor() or platform.machine()
    print(f"machine: {platform.platform()}, {cpu}, {args.threads} torch threads")
    versions = f"torch {torch.__version__}, transformers {transformers.__version__}"
    print(f"python {platform.python_version()}, {versions}")
    handle = load_model(args.model, device="cpu")
    handle.fingerprint()
    cases = load_cases(args.data_dir, args.cases)
    registry = get_registry()
    for name in args.methods.split(","):
        method = registry.load("methods", name)()
        hparams = resolve_hparams(method, handle, parse_assignments(args.set))
        if "mom2_samples" in hparams:
            start = time.perf_counter()
            config = StatsConfig(samples=hparams["mom2_samples"], tokens=hparams["mom2_tokens"])
            second_moments(handle, hparams["layers"], config)
            print(f"{name}: statistics for layers {hparams['layers']}: {time.perf_counter() - start:.1f} s")
        if method.capabilities.needs_training:
            start = time.perf_counter()
            train = load_cases(args.data_dir, args.cases + 50)[args.cases :] or cases
            method.fit(handle, train, hparams)
            print(f"{name}: fit on {len(train)} train cases: {time.perf_counter() - start:.1f} s")
        times = []
        for case in cases:
            seed_everything(case_seed(0, case.case_id))
            start = time.perf_counter()
            method.apply(handle, [case], hparams).undo()
            times.append(time.perf_counter() - start)
        first, rest = times[0], times[1:] or times
        print(
            f"{name}: {sum(rest) / len(rest):.2f} s per edit (first edit {first:.2f} s, {len(cases)} edits)"
        )


if __name__ == "__main__":
    main()
