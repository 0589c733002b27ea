"""One plan run twice: by the local executor in one process, and by `--executor ray` on a local
Ray cluster of N CPU workers; wall time of each (Ray's start-up and the workers' model loads
included), and a check that both wrote the same rows (timing aside).

    python benchmarks/ray_executor.py [--workers 2] [--method ft-l] [--task mini_zsre] [--limit 20]
        [--model PATH] [--layers 4 --hidden 64]

Without `--model`, a tiny random llama (`harness.testing.build_tiny_model`, `--layers` and
`--hidden` set its depth and width) is written to a temporary folder. Each executor gets an empty
`$HARNESS_HOME`, so neither reads the other's cached pre-edit outcomes. The machine, its load
average before and after (`os.getloadavg`: on a shared machine it says how much the numbers are
worth) and the versions are printed with the times.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path


def _rows(out: Path) -> dict:
    from harness.runs.store import RunStore, row_key

    return {row_key(r): {k: v for k, v in r.items() if k != "timing"} for r in RunStore(out).rows()}


def _timed(label: str, run) -> float:
    started = time.perf_counter()
    run()
    took = time.perf_counter() - started
    print(f"{label}: {took:.1f} s", flush=True)
    return took


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--method", default="ft-l")
    parser.add_argument("--task", default="mini_zsre")
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--model")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=64)
    args = parser.parse_args()

    import ray
    import torch
    import transformers

    from harness.commands import installed_catalog
    from harness.runs.plan import RunConfig
    from harness.runs.ray_executor import RayOptions
    from harness.runs.runner import execute
    from harness.testing import build_tiny_model

    work = Path(tempfile.mkdtemp(prefix="ray-bench-"))
    model = args.model or str(
        build_tiny_model(
            work / "model",
            num_hidden_layers=args.layers,
            hidden_size=args.hidden,
            intermediate_size=2 * args.hidden,
        )
    )
    config = RunConfig(model=model, methods=(args.method,), tasks=(args.task,), limit=args.limit)
    load_before = os.getloadavg()
    print(
        f"machine: {platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores, "
        f"{platform.system()} {platform.release()}; Python {platform.python_version()}, "
        f"torch {torch.__version__}, transformers {transformers.__version__}, ray {ray.__version__}; "
        f"torch threads {torch.get_num_threads()}"
    )
    print(f"plan: {args.method} on {args.task}, {args.limit} cases, single mode; model {model}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in load_before)}", flush=True)

    os.environ["HARNESS_HOME"] = str(work / "home-local")
    local = _timed(
        "local executor, one process",
        lambda: execute(config, work / "local", device="cpu", catalog=installed_catalog(), progress=False),
    )
    ray_home = str(work / "home-ray")
    os.environ["HARNESS_HOME"] = ray_home

    start = _timed(
        f"ray cluster start ({args.workers} CPUs)",
        lambda: ray.init(
            num_cpus=args.workers,
            include_dashboard=False,
            runtime_env={"env_vars": {"HARNESS_HOME": ray_home}},
        ),
    )
    try:
        distributed = _timed(
            f"ray executor, {args.workers} workers (their start and model loads included)",
            lambda: execute(
                config,
                work / "ray",
                device="cpu",
                catalog=installed_catalog(),
                progress=False,
                cluster=RayOptions(installed_catalog, workers=args.workers),
            ),
        )
    finally:
        ray.shutdown()
    load_after = os.getloadavg()
    print(f"load average after: {' '.join(f'{x:.2f}' for x in load_after)}")
    same = _rows(work / "local") == _rows(work / "ray")
    print(f"rows equal (timing aside): {same}; local / ray: {local / distributed:.2f}x")
    result = {"local_s": local, "cluster_start_s": start, "ray_s": distributed, "workers": args.workers}
    json.dump({**result, "rows_equal": same}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
