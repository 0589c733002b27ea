"""MEND and SERAC on smollm2-135m: training time, editing time, and each trained editor against the
same editor untrained (zero training steps), in-domain and cross-domain (issue 17).

    python benchmarks/trained_editors.py [--runs serac:100,serac:0,mend:100,mend:0,mend:0:edit_lr=1e-3]
        [--train-task wiki_counterfact] [--tasks wiki_counterfact,zsre] [--limit 10] [--data-dir DIR]
        [--out DIR]

For each METHOD:STEPS[:KEY=VALUE...] (STEPS 0: the untrained editor; KEY=VALUE: more `--set`
hyperparameters, e.g. an untrained MEND with a larger step size): `harness train` on the train task's train
split (timed; a stored editor is reused, so a second call times the lookup instead), then one
`harness run --mode cross-domain --train-task T --task A,B --limit N` (the editor found, not
trained again); a run folder that already has its summary is read instead. Prints per method,
steps and target task the headline metrics over the first N cases (so runs made with a larger
--limit compare on the same cases) and the mean seconds per `apply`, with the machine's load
(`uptime`) before and after each step and the versions of torch and transformers. Run it with
OMP_NUM_THREADS set and nothing else running if the times are to mean anything.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "knowedit"
HEADLINE = ("edit_succ", "generalization", "portability", "locality", "fluency")


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def timed(command: list[str]) -> float:
    print("$", " ".join(command), f"\n  load: {load()}", flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True)
    took = time.perf_counter() - started
    print(f"  took {took:.0f} s; load: {load()}", flush=True)
    return took


def means(rows: list[dict], task: str, limit: int) -> tuple[dict[str, float], int]:
    """Headline metric means over the first `limit` cases of `task` in a run's rows (so that runs
    with different --limit compare on the same cases), and the number of cases."""
    chosen = [r for r in rows if r["task"] == task][:limit]
    found = {}
    for metric in HEADLINE:
        values = [r["post"][metric] for r in chosen if metric in r["post"]]
        if values:
            found[metric] = sum(values) / len(values)
    return found, len(chosen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs", default="serac:100,serac:0,mend:100,mend:0", help="METHOD:STEPS[:KEY=VALUE...],..."
    )
    parser.add_argument("--train-task", default="wiki_counterfact")
    parser.add_argument("--tasks", default="wiki_counterfact,zsre")
    parser.add_argument("--limit", type=int, default=10)
    parser.add_argument("--data-dir", default=str(DATA))
    parser.add_argument("--out", default="runs/trained-editors")
    args = parser.parse_args()
    print(f"{platform.platform()}, {platform.processor() or platform.machine()}")
    print(f"torch {version('torch')}, transformers {version('transformers')}")
    lines = []
    for spec in args.runs.split(","):
        method, steps, *more = spec.split(":")
        sets = [part for value in (f"steps={steps}", *more) for part in ("--set", value)]
        out = Path(args.out) / "-".join([method, steps, *more])
        train_s = run_s = float("nan")
        if not (out / "summary.json").exists():  # a finished run is read, not run again
            train_s = timed(
                ["harness", "train", "--method", method, "--task", args.train_task, "--data-dir",
                 args.data_dir, "--no-progress", *sets]
            )  # fmt: skip
            run_s = timed(
                ["harness", "run", "--mode", "cross-domain", "--method", method, "--train-task",
                 args.train_task, "--task", args.tasks, "--limit", str(args.limit), "--data-dir",
                 args.data_dir, "--out", str(out), "--no-progress", *sets]
            )  # fmt: skip
        rows = [json.loads(line) for line in (out / "cases.jsonl").read_text().splitlines()]
        for task in args.tasks.split(","):
            metrics, n = means(rows, task, args.limit)
            applies = [r["timing"]["apply_s"] for r in rows if r["task"] == task][: args.limit]
            shown = ", ".join(f"{m} {v:.3f}" for m, v in metrics.items())
            name = " ".join([method, f"steps={steps}", *more])
            lines.append(
                f"{name} {args.train_task} -> {task} (n={n}): {shown}; "
                f"apply {sum(applies) / len(applies):.2f} s/edit; train {train_s:.0f} s, run {run_s:.0f} s"
            )
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
