"""Fluency: weighted bi/tri-gram entropy of a sampled continuation of the edit prompt.

The continuation has a fixed length: it does not stop at an end-of-sequence or end-of-turn token,
as the reference's `generate_fast` does not. An instruct model that ends its turn at once would
otherwise be scored on its prompt alone, and an edit that moved where the model stops would move
"fluency" with it. The length counts new tokens (docs/metrics.md says why).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from harness.api import EditCase, MetricInfo, Outcomes, Request, case_seed

from ._common import OptionsMetric
from .text import weighted_ngram_entropy


class Fluency(OptionsMetric):
    """mean(2/3 H2, 4/3 H3) in bits over the words of prompt + top-k sampled continuation of
    exactly `fluency_max_new_tokens` tokens."""

    name = "fluency"
    info = MetricInfo(unit="bits", headline=4)
    #: The continuation: its length in new tokens (never cut short at EOS), and k of the top-k
    #: sampling.
    option_defaults: ClassVar[Mapping[str, Any]] = {"fluency_max_new_tokens": 100, "fluency_top_k": 5}

    def _request(self, case: EditCase) -> Request:
        # The seed depends on the prompt only, so pre- and post-edit text start from the same draw.
        return Request.generate(
            case.prompt,
            self.option("fluency_max_new_tokens"),
            top_k=self.option("fluency_top_k"),
            seed=case_seed(self.options.seed, case.prompt),
            stop_at_eos=False,
        )

    def requests(self, case: EditCase) -> list[Request]:
        return [self._request(case)]

    def score(self, case: EditCase, outcomes: Outcomes) -> dict[str, float]:
        text = outcomes.generation(self._request(case)).text
        return {self.name: weighted_ngram_entropy(f"{case.prompt}{text}")}
