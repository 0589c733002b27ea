"""R-ROME, EMMET, AlphaEdit and PMET (issue 18) in single mode on real ZsRE records, with the slow
tests' protocol (tests/methods_helpers.py `mean_scores`: each edit seeded as `harness run` seeds it,
scored by the evaluator, undone, and the weights and outputs checked bit-exact after every undo).

    python benchmarks/locate_then_edit.py [--methods r-rome,emmet,alphaedit,pmet] [--cases 20] [--start 0]

`--start` skips the first records, so that a measurement can be extended (every ZsRE record has
every score here, so the means of two ranges combine weighted by their sizes).

Hyperparameters are the main job's CPU settings (the knowedit-mini suite's): R-ROME takes ROME's,
the MEMIT relatives MEMIT's. "unrelated" probes six facts about other subjects the model knows.
Prints, per method, the mean scores (and the unedited model's, `pre:`), the mean seconds of an
edit (the `apply` call alone), and the machine, load and versions. Results:
benchmarks/locate_then_edit.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the slow tests' helpers

from methods_helpers import mean_scores, zsre_cases

from harness.api import AppliedEdit
from harness.hparams import resolve_hparams
from harness.runs.catalog import Catalog
from harness.testing import get_registry, load_model


class Timed:
    """A method whose `apply` calls are timed (seconds, wall clock)."""

    def __init__(self, method) -> None:
        self.method, self.seconds = method, []

    def apply(self, *args) -> AppliedEdit:
        start = time.perf_counter()
        edit = self.method.apply(*args)
        self.seconds.append(time.perf_counter() - start)
        return edit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="r-rome,emmet,alphaedit,pmet")
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--start", type=int, default=0, help="first record (0-based)")
    args = parser.parse_args()
    suite = Catalog(get_registry()).suite("knowedit-mini").hparams
    models = get_registry().models
    name = models.default()
    handle = load_model(name, device="cpu", verify=True, alias=models.locate(name))
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()}")
    print(f"torch {version('torch')}, transformers {version('transformers')}, model {name}")
    for method_name in args.methods.split(","):
        method = get_registry().load("methods", method_name)()
        hparams = resolve_hparams(method, handle, suite["rome" if method_name == "r-rome" else "memit"])
        timed = Timed(method)
        cases = zsre_cases(args.cases, start=args.start, unrelated=True)
        scores = mean_scores(handle, timed, cases, hparams, mode="single")
        per_edit = sum(timed.seconds) / len(timed.seconds)
        shown = {key: round(value, 3) for key, value in scores.items()}
        records = f"records {args.start + 1}-{args.start + args.cases}"
        print(method_name, records, shown, f"{per_edit:.1f} s/edit", f"load {os.getloadavg()}")


if __name__ == "__main__":
    main()
