"""A small plugin for the run tests: tasks of hand-written cases and simple editing methods.

These are real plugins (registered through the same hooks as the built-ins) that the runner under
test drives; the methods make real, undoable weight edits (seeded random perturbations), so the
tests can tell apart undone, stacked and replayed edits by their scores. Also run as a script by
the SIGKILL test: `python tests/test_runs_plugin.py OUT MODEL [--resume]`.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import replace
from typing import ClassVar

import torch

from harness import hookimpl
from harness.api import (
    AppliedEdit,
    Capabilities,
    EditCase,
    LoadedCases,
    Method,
    Metric,
    MetricInfo,
    Outcomes,
    Probe,
    Request,
    Task,
)
from harness.models.handle import SnapshotEdit
from harness.plugins import build_registry

FACTS = [
    ("The capital of France is", "Berlin", "Paris"),
    ("The capital of Germany is", "Rome", "Berlin"),
    ("The capital of Italy is", "Tokyo", "Rome"),
    ("The Eiffel Tower is located in", "Madrid", "Paris"),
    ("The Colosseum is located in", "London", "Rome"),
    ("The currency of Japan is the", "euro", "yen"),
    ("The official language of Brazil is", "French", "Portuguese"),
    ("Tokyo is the capital of", "Spain", "Japan"),
    ("Marie Curie worked in", "Berlin", "Paris"),
    ("Albert Einstein was born in", "Italy", "Germany"),
]
LOCALITY = Probe("Water boils at one hundred", ("degrees",))


def fact_cases(prefix: str, facts=FACTS) -> tuple[EditCase, ...]:
    return tuple(
        EditCase(
            case_id=f"{prefix}-{i}",
            prompt=prompt,
            target_new=new,
            ground_truth=(old,),
            rephrases=(f"In short, {prompt[0].lower()}{prompt[1:]}",),
            locality={"relation_specificity": (LOCALITY,)},
        )
        for i, (prompt, new, old) in enumerate(facts)
    )


class FactsTask(Task):
    """Capital-city edits with a train split (for cross-domain runs)."""

    name = "facts"
    record_format = "zsre"
    metrics = ("edit_succ", "generalization", "locality", "perplexity")
    splits = ("train", "test")
    prefix: ClassVar[str] = "f"

    def load(self, *, split="test", data_dir=None, skip_invalid=False) -> LoadedCases:
        cases = fact_cases(self.prefix)
        chosen = cases[:6] if split == "test" else cases[6:]
        return LoadedCases(chosen, source=f"<{self.name}:{split}>")


class OtherFactsTask(FactsTask):
    name = "other_facts"
    prefix = "o"
    metrics = ("edit_succ", "locality")
    splits = ("test",)


class Nudge(Method):
    """Adds seeded noise to one MLP output matrix: a real edit, different for every seed."""

    name = "nudge"
    capabilities = Capabilities(batch=True, sequential=True)
    hparams_schema: ClassVar[dict] = {
        "type": "object",
        "properties": {
            "scale": {"type": "number", "default": 0.5},
            "delay": {"type": "number", "default": 0},
        },
    }

    def apply(self, handle, cases, hparams):
        name = f"{handle.adapter.mlp_out_name(0)}.weight"
        snapshot = handle.snapshot([name])
        param = dict(handle.model.named_parameters())[name]
        with torch.no_grad():
            param.add_(torch.randn_like(param) * hparams["scale"] * len(cases))
        time.sleep(hparams["delay"])
        return SnapshotEdit(handle, snapshot)


class Single(Nudge):
    """The same edit, declared unable to batch or to stack."""

    name = "single-only"
    capabilities = Capabilities(batch=False, sequential=False)


class Picky(Nudge):
    """The same edit, refusing (before any model loads) the cases whose prompt names Germany."""

    name = "picky"

    def check_case(self, case):
        return f"case {case.case_id}: field 'prompt' names Germany" if "Germany" in case.prompt else None


class Stops(Nudge):
    """The same edit, until the case named in `stop_at` comes: then it raises `stop` instead,
    once (the class attributes are the switch, so a resumed run gets past that case)."""

    name = "stops"
    stop_at: ClassVar[str | None] = None
    stop: ClassVar[type[BaseException]] = KeyboardInterrupt

    def apply(self, handle, cases, hparams):
        if Stops.stop_at in {c.case_id for c in cases}:
            Stops.stop_at = None
            raise Stops.stop("stopped by the test")
        return super().apply(handle, cases, hparams)


class LongFactsTask(FactsTask):
    """Four facts, the second with a prompt longer than the tiny models' 256 positions."""

    name = "long_facts"
    prefix = "l"
    splits = ("test",)

    def load(self, *, split="test", data_dir=None, skip_invalid=False) -> LoadedCases:
        cases = list(fact_cases(self.prefix)[:4])
        cases[1] = replace(cases[1], prompt="Long ago and far away, " * 60 + cases[1].prompt)
        return LoadedCases(tuple(cases), source="<long_facts:test>")


class Recall(Method):
    """An in-context learner: fit remembers the train split, apply states the new fact."""

    name = "recall"
    capabilities = Capabilities(needs_training=True, edits_weights=False)

    def fit(self, handle, train_cases, hparams):
        self.demos = "".join(f"{c.prompt} {c.target_new}. " for c in train_cases)

    def apply(self, handle, cases, hparams):
        edit = AppliedEdit()
        edit.context = self.demos + "".join(f"{c.prompt} {c.target_new}. " for c in cases)
        return edit


class Noop(Method):
    """Changes nothing: every edit leaves every score where the unedited model had it."""

    name = "noop"
    capabilities = Capabilities(batch=True, edits_weights=False)

    def apply(self, handle, cases, hparams):
        return AppliedEdit()


class TargetRank(Metric):
    """The rank of target_new's first token after the prompt on the edited model (1 = top): a
    plugin metric in its own unit, where lower is better."""

    name = "target_rank"
    info = MetricInfo(unit="rank", higher_is_better=False, edit_success=True)

    @staticmethod
    def request(case: EditCase) -> Request:
        return Request.score(case.prompt, case.target_new)

    def requests(self, case: EditCase) -> list[Request]:
        return [self.request(case)]

    def score(self, case: EditCase, outcomes: Outcomes) -> dict[str, float]:
        return {self.name: outcomes.scores(self.request(case)).gold_ranks[0]}


class Plugin:
    @hookimpl
    def harness_register_tasks(self, register):
        register("facts", FactsTask)
        register("other_facts", OtherFactsTask)
        register("long_facts", LongFactsTask)

    @hookimpl
    def harness_register_methods(self, register):
        for method in (Nudge, Single, Picky, Stops, Recall, Noop):
            register(method.name, method)

    @hookimpl
    def harness_register_metrics(self, register):
        register(TargetRank.name, TargetRank)


def registry():
    return build_registry(extra_plugins=[("runs-test", Plugin())])


def main(out: str, model: str, resume: bool) -> None:
    from harness.runs.catalog import Catalog
    from harness.runs.plan import RunConfig
    from harness.runs.runner import execute

    config = RunConfig(
        model=model,
        methods=("nudge",),
        tasks=("facts",),
        mode="sequential",
        eval_at=(2,),
        overrides={"delay": float(os.environ.get("NUDGE_DELAY", "0"))},
    )
    execute(config, out, resume=resume, device="cpu", catalog=Catalog(registry()), progress=False)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], "--resume" in sys.argv)
