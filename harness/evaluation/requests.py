"""What a metric asks of the model, and what it gets back.

This module is plain data (no torch) so that third-party metric authors and `harness list` can
import it cheaply. A metric returns `Request`s from `Metric.requests`; the evaluator runs each
distinct request once per phase, in shared batches, and hands the metric an `Outcomes` view to
`score` from. Requests are frozen and hashable: two metrics asking the same thing share one run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from harness.api import HarnessError

Phase = Literal["pre", "post"]
Kind = Literal["score", "generate"]

#: Which model states a request is needed on: the unedited one, the edited one, or both.
PRE: frozenset[str] = frozenset({"pre"})
POST: frozenset[str] = frozenset({"post"})
BOTH: frozenset[str] = frozenset({"pre", "post"})


@dataclass(frozen=True)
class Request:
    """One question put to the model.

    kind "score": teacher-force `prompt + " " + answer` and report, per answer token, the argmax
    prediction, the gold id and the log-probability of the gold token; with `dist_top_k` > 0 also
    the next-token distribution at every answer position (its `dist_top_k` most likely ids on the
    unedited model, see `TokenScores.dist_ids`).
    kind "generate": continue `prompt` for `max_new_tokens` tokens, greedily (`top_k` = 0) or by
    top-k sampling from a generator seeded with `seed`, stopping early at end of sequence.

    `phases` says on which model states the outcome is needed; a metric that compares the two
    (locality, KL) asks for both. Phases are not part of a request's identity: a metric looks an
    outcome up by the same request whatever phases another metric asked it for.
    """

    kind: Kind
    prompt: str
    answer: str = ""
    phases: frozenset[str] = field(default=POST, compare=False)
    dist_top_k: int = 0
    max_new_tokens: int = 0
    top_k: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ("score", "generate"):
            raise HarnessError(f"unknown request kind {self.kind!r}; known: score, generate")
        if not self.phases or not self.phases <= BOTH:
            raise HarnessError(f"request phases must be a non-empty subset of pre/post, got {self.phases}")
        if self.kind == "score" and not self.answer:
            raise HarnessError(f"a score request needs a non-empty answer (prompt {self.prompt!r})")
        if self.kind == "generate" and self.max_new_tokens <= 0:
            raise HarnessError(f"a generate request needs max_new_tokens > 0 (prompt {self.prompt!r})")

    @classmethod
    def score(
        cls, prompt: str, answer: str, *, phases: frozenset[str] = POST, dist_top_k: int = 0
    ) -> Request:
        return cls("score", prompt, answer, phases=phases, dist_top_k=dist_top_k)

    @classmethod
    def generate(
        cls,
        prompt: str,
        max_new_tokens: int,
        *,
        phases: frozenset[str] = POST,
        top_k: int = 0,
        seed: int = 0,
    ) -> Request:
        return cls("generate", prompt, phases=phases, max_new_tokens=max_new_tokens, top_k=top_k, seed=seed)

    def identity(self) -> dict[str, Any]:
        """What determines the outcome (phases do not): the part of the pre-edit cache key."""
        return {
            "kind": self.kind,
            "prompt": self.prompt,
            "answer": self.answer,
            "dist_top_k": self.dist_top_k,
            "max_new_tokens": self.max_new_tokens,
            "top_k": self.top_k,
            "seed": self.seed,
        }

    def with_prompt(self, prompt: str) -> Request:
        return replace(self, prompt=prompt)

    def with_phases(self, phases: frozenset[str]) -> Request:
        return replace(self, phases=phases)


@dataclass(frozen=True)
class TokenScores:
    """Teacher-forced answer scoring: one entry per answer token, in order.

    `dist_ids[i]` / `dist_logprobs[i]`: for a request with `dist_top_k`, the ids of the unedited
    model's `dist_top_k` most likely next tokens at answer position i and their log-probabilities
    under the model this outcome comes from (the post-edit outcome is read at the pre-edit ids so
    the two can be compared); empty otherwise.
    """

    pred_ids: tuple[int, ...]
    gold_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    dist_ids: tuple[tuple[int, ...], ...] = ()
    dist_logprobs: tuple[tuple[float, ...], ...] = ()

    @property
    def accuracy(self) -> float:
        """Fraction of answer tokens whose greedy prediction, given the gold prefix, is the gold token."""
        return sum(p == g for p, g in zip(self.pred_ids, self.gold_ids, strict=False)) / len(self.gold_ids)

    @property
    def mean_logprob(self) -> float:
        return sum(self.logprobs) / len(self.logprobs)

    def to_json(self) -> dict[str, Any]:
        return {
            "pred_ids": list(self.pred_ids),
            "gold_ids": list(self.gold_ids),
            "logprobs": list(self.logprobs),
            "dist_ids": [list(x) for x in self.dist_ids],
            "dist_logprobs": [list(x) for x in self.dist_logprobs],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TokenScores:
        return cls(
            tuple(data["pred_ids"]),
            tuple(data["gold_ids"]),
            tuple(data["logprobs"]),
            tuple(tuple(x) for x in data["dist_ids"]),
            tuple(tuple(x) for x in data["dist_logprobs"]),
        )


@dataclass(frozen=True)
class Generation:
    """A continuation: its token ids (end-of-sequence excluded) and their decoded text."""

    token_ids: tuple[int, ...]
    text: str

    def to_json(self) -> dict[str, Any]:
        return {"token_ids": list(self.token_ids), "text": self.text}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Generation:
        return cls(tuple(data["token_ids"]), data["text"])


Outcome = TokenScores | Generation


def outcome_from_json(kind: str, data: Mapping[str, Any]) -> Outcome:
    return TokenScores.from_json(data) if kind == "score" else Generation.from_json(data)


class Outcomes:
    """The outcomes of one case's requests, by phase, as `Metric.score` sees them."""

    def __init__(self, case_id: str, pre: Mapping[Request, Outcome], post: Mapping[Request, Outcome]):
        self.case_id = case_id
        self._phases = {"pre": pre, "post": post}

    def get(self, request: Request, phase: Phase = "post") -> Outcome:
        try:
            return self._phases[phase][request]
        except KeyError:
            raise HarnessError(
                f"case {self.case_id!r}: no {phase}-edit outcome for {request.kind} request on "
                f"{request.prompt!r}; did the metric list it in requests() with that phase?"
            ) from None

    def scores(self, request: Request, phase: Phase = "post") -> TokenScores:
        outcome = self.get(request, phase)
        assert isinstance(outcome, TokenScores)
        return outcome

    def generation(self, request: Request, phase: Phase = "post") -> Generation:
        outcome = self.get(request, phase)
        assert isinstance(outcome, Generation)
        return outcome
