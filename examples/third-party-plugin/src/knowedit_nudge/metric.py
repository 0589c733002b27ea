"""`first_token_hit`: is the target's first token the model's top choice after the prompt?

Stricter than token accuracy on short targets and looser on long ones; it shows whether an edit
moved the very next word, which is all `logit-nudge` promises.
"""

from __future__ import annotations

from harness.api import EditCase, Metric, MetricInfo, Outcomes, Request


class FirstTokenHit(Metric):
    """1.0 when the greedy next token after the prompt is the first token of `target_new`."""

    name = "first_token_hit"
    info = MetricInfo(unit="fraction", higher_is_better=True, edit_success=True)

    def requests(self, case: EditCase) -> list[Request]:
        return [Request.score(case.prompt, case.target_new)]

    def score(self, case: EditCase, outcomes: Outcomes) -> dict[str, float]:
        scores = outcomes.scores(Request.score(case.prompt, case.target_new))
        return {self.name: float(scores.pred_ids[0] == scores.gold_ids[0])}
