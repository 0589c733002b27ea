"""The KnowEdit metrics: edit success, generalization, portability and locality, all on
teacher-forced answer tokens (definitions in docs/metrics.md)."""

from __future__ import annotations

from harness.api import BOTH, EditCase, MetricInfo, Outcomes, Probe, Request

from ._common import AccuracyMetric, OptionsMetric, edit_probe, group_scores, mean, rephrase_probes


class EditSucc(AccuracyMetric):
    """Reliability: token accuracy of target_new after the edit prompt."""

    name = "edit_succ"
    info = MetricInfo(headline=0, edit_success=True)

    def requests(self, case: EditCase) -> list[Request]:
        return self.requests_for([edit_probe(case)])

    def score(self, case: EditCase, outcomes: Outcomes) -> dict[str, float]:
        value = self.probe_score(edit_probe(case), outcomes)
        return {} if value is None else {self.name: value}


class Generalization(AccuracyMetric):
    """Token accuracy of target_new after each rephrased prompt, averaged over rephrases."""

    name = "generalization"
    info = MetricInfo(headline=1)

    def requests(self, case: EditCase) -> list[Request]:
        return self.requests_for(rephrase_probes(case))

    def score(self, case: EditCase, outcomes: Outcomes) -> dict[str, float]:
        value = self.probes_mean(rephrase_probes(case), outcomes)
        return {} if value is None else {self.name: value}


class Portability(AccuracyMetric):
    """Token accuracy on portability probes: per group the mean over probes, overall the mean over groups."""

    name = "portability"
    info = MetricInfo(headline=2)

    def requests(self, case: EditCase) -> list[Request]:
        return self.requests_for([p for group in case.portability.values() for p in group])

    def score(self, case: EditCase, outcomes: Outcomes) -> dict[str, float]:
        groups = {g: self.probes_mean(ps, outcomes) for g, ps in case.portability.items()}
        return group_scores(self.name, groups)


class Locality(OptionsMetric):
    """Agreement of post-edit with pre-edit argmax tokens, teacher-forced on the first answer."""

    name = "locality"
    info = MetricInfo(headline=3)

    def _request(self, probe: Probe) -> Request | None:
        answers = [a for a in probe.answers if a.strip()]
        return Request.score(probe.prompt, answers[0], phases=BOTH) if answers else None

    def requests(self, case: EditCase) -> list[Request]:
        found = (self._request(p) for group in case.locality.values() for p in group)
        return [r for r in found if r is not None]

    def score(self, case: EditCase, outcomes: Outcomes) -> dict[str, float]:
        groups = {}
        for group, probes in case.locality.items():
            requests = [r for r in (self._request(p) for p in probes) if r is not None]
            groups[group] = mean(self._agreement(r, outcomes) for r in requests)
        return group_scores(self.name, groups)

    @staticmethod
    def _agreement(request: Request, outcomes: Outcomes) -> float:
        pre, post = outcomes.scores(request, "pre").pred_ids, outcomes.scores(request, "post").pred_ids
        return sum(a == b for a, b in zip(pre, post, strict=False)) / len(pre)
