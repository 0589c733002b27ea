"""The evaluator: collects every metric's requests for a group of cases, runs each distinct request
once per phase in shared batches, and lets the metrics score from the outcomes."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from harness.evaluation.batching import (
    OnBatch,
    ScoreJob,
    over_limit,
    position_limit,
    request_lengths,
    run_generations,
    run_scores,
)
from harness.evaluation.cache import PROTOCOL_VERSION, PreCache
from harness.evaluation.options import EvalOptions
from harness.evaluation.requests import Outcome, Outcomes, Request
from harness.ground import EditCase, HarnessError, Metric
from harness.models.tokenization import chat_template_of, render_chat

#: A metric as the evaluator takes it: an instance, or a class it instantiates. Names are resolved
#: by the caller's registry (`registry.metrics.load(name)`): evaluation knows no plugin.
MetricSpec = Metric | type[Metric]
#: Told (requests done, requests in all) as the unedited model's outcomes are computed.
Progress = Callable[[int, int], None]


def _batches_told(progress: Progress | None, total: int) -> OnBatch | None:
    """The per-batch callback that keeps `progress` told of `total` requests: (0, total) now, then
    the running count after each batch."""
    if progress is None:
        return None
    progress(0, total)
    done = 0

    def on_batch(n: int) -> None:
        nonlocal done
        done += n
        progress(done, total)

    return on_batch


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
        #: The chat template prompts are rendered in (refused now, not mid-run, if there is none).
        self.chat_template = chat_template_of(handle.tokenizer) if self.options.chat_template else None
        self.cache = PreCache(handle, self.options) if self.options.use_cache else None
        self._pre: dict[Request, Outcome] = {}
        #: How many pre-edit outcomes were computed (not read from memory or disk): shows cache reuse.
        self.pre_computed = 0

    def settings(self) -> dict[str, Any]:
        """What the results depend on, for the run manifest: the engine's protocol, the options
        (the value of every option the metrics declare among them), the metrics, and the text of
        the chat template when prompts are rendered in one."""
        settings = {
            "protocol": PROTOCOL_VERSION,
            "options": {**self.options.to_json(), **self._metric_options},
            "metrics": [getattr(m, "name", type(m).__name__) for m in self.metrics],
        }
        if self.chat_template is not None:
            settings["chat_template_text"] = self.chat_template
        return settings

    def _as_asked(self, request: Request, context: str = "") -> Request:
        """The request as the model is asked it: an in-context edit's context before the prompt,
        and the two as one user turn of the chat template when the evaluation applies it (so a
        context sits inside the turn, where the user would write it)."""
        prompt = context + request.prompt
        if self.chat_template is not None:
            prompt = render_chat(self.handle.tokenizer, prompt)
        return request.with_prompt(prompt) if prompt != request.prompt else request

    def requests(self, case: EditCase) -> list[Request]:
        """Every metric's requests for a case, each once, needed in the union of the phases asked."""
        phases: dict[Request, frozenset[str]] = {}
        for metric in self.metrics:
            for request in metric.requests(case):
                phases[request] = phases.get(request, frozenset()) | request.phases
        return [request.with_phases(p) for request, p in phases.items()]

    def too_long(self, cases: Sequence[EditCase]) -> dict[str, str]:
        """Case id -> why, for each case with a request (as the model is asked it, chat template
        included) longer than the model's positions: scoring it would fail (`check_lengths`), so a
        run leaves such cases out or refuses them before it edits anything. Tokenizes only."""
        limit = position_limit(self.handle.model)
        if not limit:
            return {}
        asked = [(case, [self._as_asked(r) for r in self.requests(case)]) for case in cases]
        flat = [r for _, requests in asked for r in requests]
        lengths = iter(request_lengths(self.handle.tokenizer, flat))
        problems = {}
        for case, requests in asked:
            own = [next(lengths) for _ in requests]
            over = over_limit(limit, own, requests)
            if over:
                worst = max(over, key=lambda i: own[i] + requests[i].max_new_tokens)
                need = own[worst] + requests[worst].max_new_tokens
                problems[case.case_id] = (
                    f"case {case.case_id}: a probe needs {need} of the model's {limit} positions "
                    f"({requests[worst].prompt[:60]!r}...)"
                )
        return problems

    def prepare(self, cases: Iterable[EditCase], progress: Progress | None = None) -> None:
        """Compute (or load) every pre-edit outcome the cases need. Call before editing.
        `progress(done, total)` is told the requests the model runs (those in neither memory nor
        the cache): first (0, total), then after each batch."""
        self._ensure_pre((r for case in cases for r in self.requests(case) if "pre" in r.phases), progress)

    def evaluate_pre(
        self, cases: Sequence[EditCase], progress: Progress | None = None
    ) -> list[dict[str, float]]:
        """The metrics on the unedited model: every request runs on it and serves as both phases.
        `progress` as in `prepare`."""
        self._ensure_pre((r for case in cases for r in self.requests(case)), progress)
        return [self._score(case, {r: self._pre[r] for r in self.requests(case)}) for case in cases]

    def evaluate(
        self, cases: Sequence[EditCase], contexts: Mapping[str, str] | None = None
    ) -> list[dict[str, float]]:
        """Post-edit scores per case, in order. `contexts[case_id]` is put before every probe prompt
        on the edited model (in-context editing; inside the user turn when the chat template is
        applied); pre-edit outcomes never see it."""
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
            per_case.append({r: self._as_asked(r, context) for r in requests})
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

    def _ensure_pre(self, requests: Iterable[Request], progress: Progress | None = None) -> None:
        asked = {r: self._as_asked(r) for r in dict.fromkeys(requests) if r not in self._pre}
        if self.cache is not None:
            for request, actual in asked.items():
                outcome = self.cache.load(actual)
                if outcome is not None:
                    self._pre[request] = outcome
            asked = {r: actual for r, actual in asked.items() if r not in self._pre}
        todo = dict.fromkeys(asked.values())  # whitespace variants of one chat prompt are asked once
        computed = self._run(todo, _batches_told(progress, len(todo)))
        self.pre_computed += len(computed)
        for actual, outcome in computed.items():
            if self.cache is not None:
                self.cache.store(actual, outcome)
        for request, actual in asked.items():
            self._pre[request] = computed[actual]

    def _run(
        self, requests: Mapping[Request, Any], on_batch: OnBatch | None = None
    ) -> dict[Request, Outcome]:
        """Outcomes of distinct requests on the model as it is now (score requests carry the
        pre-edit top-k ids their distribution is read at, or None)."""
        scores = [ScoreJob(r, ref) for r, ref in requests.items() if r.kind == "score"]
        generations = [r for r in requests if r.kind == "generate"]
        model, tokenizer = self.handle.model, self.handle.tokenizer
        with _inference(model):
            scored = run_scores(model, tokenizer, scores, self.options, on_batch)
            generated = run_generations(model, tokenizer, generations, self.options, on_batch)
        out: dict[Request, Outcome] = {job.request: s for job, s in zip(scores, scored, strict=False)}
        out.update(zip(generations, generated, strict=False))
        return out
