"""The evaluator: collects every metric's requests for a group of cases, runs each distinct request
once per phase in shared batches, and lets the metrics score from the outcomes."""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from harness.evaluation.batching import ScoreJob, run_generations, run_scores
from harness.evaluation.cache import PROTOCOL_VERSION, PreCache
from harness.evaluation.options import EvalOptions
from harness.evaluation.requests import Outcome, Outcomes, Request
from harness.ground import EditCase, HarnessError, Metric

#: A metric as the evaluator takes it: an instance, or a class it instantiates. Names are resolved
#: by the caller's registry (`registry.metrics.load(name)`): evaluation knows no plugin.
MetricSpec = Metric | type[Metric]


def build_metric(spec: MetricSpec, options: EvalOptions) -> Metric:
    """A metric instance from an instance or a class. Classes whose constructor takes `options`
    get the evaluation's options (alias policy, seed, their own `metric_options`)."""
    if isinstance(spec, Metric):
        return spec
    if not (isinstance(spec, type) and issubclass(spec, Metric)):
        raise HarnessError(f"{spec!r} is not a Metric subclass")
    if "options" in inspect.signature(spec).parameters:
        return spec(options=options)
    return spec()


def metric_options(metrics: Sequence[Metric], options: EvalOptions) -> dict[str, Any]:
    """The value of every option the metrics declare (`Metric.option_defaults`), as `options` set
    it or by default. Options no metric here declares are left out: one `EvalOptions` may serve
    evaluators of several metric sets (a run's tasks). Raises HarnessError for an option declared
    by two metrics with different defaults (they would silently share one value)."""
    declared: dict[str, tuple[str, Any]] = {}
    for metric in metrics:
        for name, default in metric.option_defaults.items():
            other, other_default = declared.setdefault(name, (metric.name, default))
            if other_default != default:
                raise HarnessError(
                    f"metric option {name!r} is declared by {other!r} (default {other_default!r}) and "
                    f"{metric.name!r} (default {default!r}); one of them must rename it"
                )
    return {name: options.metric_options.get(name, default) for name, (_, default) in declared.items()}


@contextmanager
def _inference(model):
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


class Evaluator:
    """Scores edit cases with a set of metrics on one model handle."""

    def __init__(self, handle, metrics: Sequence[MetricSpec], options: EvalOptions | None = None) -> None:
        self.handle = handle
        self.options = options or EvalOptions()
        self.metrics = [build_metric(m, self.options) for m in metrics]
        self._metric_options = metric_options(self.metrics, self.options)
        self.cache = PreCache(handle, self.options) if self.options.use_cache else None
        self._pre: dict[Request, Outcome] = {}
        #: How many pre-edit outcomes were computed (not read from memory or disk): shows cache reuse.
        self.pre_computed = 0

    def settings(self) -> dict[str, Any]:
        """What the results depend on, for the run manifest: the engine's protocol, the options
        (the value of every option the metrics declare among them) and the metrics."""
        return {
            "protocol": PROTOCOL_VERSION,
            "options": {**self.options.to_json(), **self._metric_options},
            "metrics": [getattr(m, "name", type(m).__name__) for m in self.metrics],
        }

    def requests(self, case: EditCase) -> list[Request]:
        """Every metric's requests for a case, each once, needed in the union of the phases asked."""
        phases: dict[Request, frozenset[str]] = {}
        for metric in self.metrics:
            for request in metric.requests(case):
                phases[request] = phases.get(request, frozenset()) | request.phases
        return [request.with_phases(p) for request, p in phases.items()]

    def prepare(self, cases: Iterable[EditCase]) -> None:
        """Compute (or load) every pre-edit outcome the cases need. Call before editing."""
        self._ensure_pre(r for case in cases for r in self.requests(case) if "pre" in r.phases)

    def evaluate_pre(self, cases: Sequence[EditCase]) -> list[dict[str, float]]:
        """The metrics on the unedited model: every request runs on it and serves as both phases."""
        self._ensure_pre(r for case in cases for r in self.requests(case))
        return [self._score(case, {r: self._pre[r] for r in self.requests(case)}) for case in cases]

    def evaluate(
        self, cases: Sequence[EditCase], contexts: Mapping[str, str] | None = None
    ) -> list[dict[str, float]]:
        """Post-edit scores per case, in order. `contexts[case_id]` is put before every probe prompt
        on the edited model (in-context editing); pre-edit outcomes never see it."""
        contexts = contexts or {}
        per_case = []
        for case in cases:
            requests = self.requests(case)
            missing = [r for r in requests if "pre" in r.phases and r not in self._pre]
            if missing:
                raise HarnessError(
                    f"case {case.case_id!r}: pre-edit outcomes are missing; call Evaluator.prepare(cases) "
                    "before editing the model"
                )
            context = contexts.get(case.case_id, "")
            per_case.append({r: r.with_prompt(context + r.prompt) if context else r for r in requests})
        post = self._run(
            {actual: self._ref_ids(request) for mapping in per_case for request, actual in mapping.items()}
        )
        return [
            self._score(case, {r: post[actual] for r, actual in mapping.items()})
            for case, mapping in zip(cases, per_case, strict=False)
        ]

    def _ref_ids(self, request: Request):
        pre = self._pre.get(request)
        return getattr(pre, "dist_ids", None) or None

    def _score(self, case: EditCase, post: dict[Request, Outcome]) -> dict[str, float]:
        pre = {r: self._pre[r] for r in post if r in self._pre}
        outcomes = Outcomes(case.case_id, pre, post)
        scores: dict[str, float] = {}
        for metric in self.metrics:
            for key, value in metric.score(case, outcomes).items():
                if key in scores:
                    raise HarnessError(f"metric key {key!r} is produced by two metrics")
                scores[key] = float(value)
        return scores

    def _ensure_pre(self, requests: Iterable[Request]) -> None:
        missing = list(dict.fromkeys(r for r in requests if r not in self._pre))
        if self.cache is not None:
            for request in missing:
                outcome = self.cache.load(request)
                if outcome is not None:
                    self._pre[request] = outcome
            missing = [r for r in missing if r not in self._pre]
        computed = self._run(dict.fromkeys(missing))
        self.pre_computed += len(computed)
        for request, outcome in computed.items():
            self._pre[request] = outcome
            if self.cache is not None:
                self.cache.store(request, outcome)

    def _run(self, requests: Mapping[Request, Any]) -> dict[Request, Outcome]:
        """Outcomes of distinct requests on the model as it is now (score requests carry the
        pre-edit top-k ids their distribution is read at, or None)."""
        scores = [ScoreJob(r, ref) for r, ref in requests.items() if r.kind == "score"]
        generations = [r for r in requests if r.kind == "generate"]
        model, tokenizer = self.handle.model, self.handle.tokenizer
        with _inference(model):
            scored = run_scores(model, tokenizer, scores, self.options)
            generated = run_generations(model, tokenizer, generations, self.options)
        out: dict[Request, Outcome] = {job.request: s for job, s in zip(scores, scored, strict=False)}
        out.update(zip(generations, generated, strict=False))
        return out
