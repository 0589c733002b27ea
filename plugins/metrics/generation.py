"""Generation-based checks beside the lenient teacher-forced score: does the model, left to
itself, say the answer? (definitions in docs/metrics.md)"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from harness.api import Outcomes, Probe, Request

from ._common import AccuracyMetric, SectionsMetric
from .text import normalize_answer


class ExactMatch(SectionsMetric, AccuracyMetric):
    """1 if greedy decoding from the prompt produces exactly the answer's tokens, else 0.

    Greedy decoding reproduces the answer tokens exactly when every teacher-forced argmax equals the
    gold token, so this reads the same forward pass as edit_succ and needs no decode loop."""

    name = "exact_match"

    def probe_value(self, probe: Probe, answer: str, outcomes: Outcomes) -> float:
        return float(super().probe_value(probe, answer, outcomes) == 1.0)


class Contains(SectionsMetric):
    """1 if the normalized answer occurs in the normalized greedy continuation, else 0."""

    name = "contains"
    #: The length of the greedy continuation searched for the answer.
    option_defaults: ClassVar[Mapping[str, Any]] = {"generation_max_new_tokens": 32}

    def _request(self, prompt: str) -> Request:
        return Request.generate(prompt, self.option("generation_max_new_tokens"))

    def probe_requests(self, probe: Probe) -> list[Request]:
        return [self._request(probe.prompt)] if self.answers(probe) else []

    def probe_value(self, probe: Probe, answer: str, outcomes: Outcomes) -> float:
        text = normalize_answer(outcomes.generation(self._request(probe.prompt)).text)
        wanted = normalize_answer(answer)
        return float(bool(wanted) and f" {wanted} " in f" {text} ")
