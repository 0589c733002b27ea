"""What the built-in metrics share: the evaluation options (the run's and their own), the alias
policy, and scoring probes by teacher-forced token accuracy."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from harness.api import EditCase, EvalOptions, Metric, Outcomes, Probe, Request


class OptionsMetric(Metric):
    """A metric configured by the evaluation's options."""

    def __init__(self, options: EvalOptions | None = None) -> None:
        self.options = options or EvalOptions()

    def option(self, name: str) -> Any:
        """The run's value of one of this metric's `option_defaults`."""
        return self.options.metric_option(self, name)

    def answers(self, probe: Probe) -> tuple[str, ...]:
        """The answers a probe is scored against under the alias policy. Blank answers are dropped
        (as the reference does), so a probe may have none and then does not count."""
        usable = tuple(a for a in probe.answers if a.strip())
        return usable[:1] if self.options.alias_policy == "first" else usable


def mean(values: Iterable[float]) -> float | None:
    items = list(values)
    return sum(items) / len(items) if items else None


def group_scores(name: str, groups: Mapping[str, float | None]) -> dict[str, float]:
    """`name.group` per scored group and `name` = the mean over groups (absent if none scored)."""
    scored = {g: v for g, v in groups.items() if v is not None}
    out = {f"{name}.{g}": v for g, v in scored.items()}
    overall = mean(scored.values())
    if overall is not None:
        out[name] = overall
    return out


class ProbeMetric(OptionsMetric):
    """A per-probe score (the best over the policy's answers), averaged over probes."""

    def probe_requests(self, probe: Probe) -> list[Request]:
        raise NotImplementedError

    def probe_value(self, probe: Probe, answer: str, outcomes: Outcomes) -> float:
        raise NotImplementedError

    def requests_for(self, probes: Sequence[Probe]) -> list[Request]:
        return [r for p in probes for r in self.probe_requests(p)]

    def probe_score(self, probe: Probe, outcomes: Outcomes) -> float | None:
        values = [self.probe_value(probe, a, outcomes) for a in self.answers(probe)]
        return max(values) if values else None

    def probes_mean(self, probes: Sequence[Probe], outcomes: Outcomes) -> float | None:
        return mean(s for s in (self.probe_score(p, outcomes) for p in probes) if s is not None)


def edit_probe(case: EditCase) -> Probe:
    return Probe(case.prompt, (case.target_new,))


def rephrase_probes(case: EditCase) -> tuple[Probe, ...]:
    return tuple(Probe(r, (case.target_new,)) for r in case.rephrases)


class AccuracyMetric(ProbeMetric):
    """Probes scored by teacher-forced token accuracy of an answer after the prompt."""

    def probe_requests(self, probe: Probe) -> list[Request]:
        return [Request.score(probe.prompt, a) for a in self.answers(probe)]

    def probe_value(self, probe: Probe, answer: str, outcomes: Outcomes) -> float:
        return outcomes.scores(Request.score(probe.prompt, answer)).accuracy


class SectionsMetric(ProbeMetric):
    """A probe score reported on the edit prompt (`name`), the rephrases (`name.generalization`)
    and the portability probes (`name.portability`, mean over groups of the mean over probes)."""

    def requests(self, case: EditCase) -> list[Request]:
        probes = [edit_probe(case), *rephrase_probes(case)]
        probes += [p for group in case.portability.values() for p in group]
        return self.requests_for(probes)

    def score(self, case: EditCase, outcomes: Outcomes) -> dict[str, float]:
        sections = {
            self.name: self.probe_score(edit_probe(case), outcomes),
            f"{self.name}.generalization": self.probes_mean(rephrase_probes(case), outcomes),
            f"{self.name}.portability": mean(
                s
                for s in (self.probes_mean(ps, outcomes) for ps in case.portability.values())
                if s is not None
            ),
        }
        return {k: v for k, v in sections.items() if v is not None}
