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

from harness.ground import HarnessError

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
    prediction, the gold id, the log-probability of the gold token and its rank in the vocabulary;
    with `dist_top_k` > 0 also the next-token distribution at every answer position, read at the
    unedited model's `dist_top_k` most likely ids (see `TokenScores` for what each field holds).
    The outcome is a `TokenScores`.
    kind "generate": continue `prompt` for `max_new_tokens` tokens, greedily (`top_k` = 0) or by
    top-k sampling from a generator seeded with `seed`, stopping early at end of sequence (the
    tokenizer's EOS and the model's configured end tokens, such as an instruct model's end of
    turn) unless `stop_at_eos` is False. The outcome is a `Generation`.

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
    stop_at_eos: bool = True

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
        """Teacher-forced scoring of `answer` after `prompt` (joined with one space unless the answer
        starts with one; a non-empty answer is required).

        phases: PRE, POST (default) or BOTH: the model states whose outcome `score` reads.
        dist_top_k: 0 (default) for no distribution; k > 0 to get, at every answer position, the
            unedited model's k most likely next-token ids and each phase's log-probabilities at
            them (`TokenScores.dist_ids` / `dist_logprobs`), e.g. for a KL between the phases.
        """
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
        stop_at_eos: bool = True,
    ) -> Request:
        """A continuation of `prompt` of at most `max_new_tokens` (> 0) tokens.

        phases: PRE, POST (default) or BOTH, as for `score`.
        top_k: 0 (default) decodes greedily; k > 0 samples each token from the k most likely ones.
        seed: seeds this request's own generator when sampling, so the continuation does not depend
            on the other requests in its batch (derive it with `case_seed(options.seed, prompt)`
            to make pre- and post-edit samples start from the same draw).
        stop_at_eos: True (default) ends the continuation before the first end-of-sequence token
            (EOS, or an end of turn the model is configured to stop at), so it may be shorter; False
            generates exactly `max_new_tokens` tokens whatever they are, as a text statistic over a
            fixed length needs (fluency: a model that ends its turn at once would leave it empty).
        """
        return cls(
            "generate",
            prompt,
            phases=phases,
            max_new_tokens=max_new_tokens,
            top_k=top_k,
            seed=seed,
            stop_at_eos=stop_at_eos,
        )

    def identity(self) -> dict[str, Any]:
        """What determines the outcome (phases do not): the part of the pre-edit cache key.
        `stop_at_eos` is in it only when False, so that keys written before the option existed,
        all of requests that stop, stay valid."""
        identity = {
            "kind": self.kind,
            "prompt": self.prompt,
            "answer": self.answer,
            "dist_top_k": self.dist_top_k,
            "max_new_tokens": self.max_new_tokens,
            "top_k": self.top_k,
            "seed": self.seed,
        }
        if not self.stop_at_eos:
            identity["stop_at_eos"] = False
        return identity

    def with_prompt(self, prompt: str) -> Request:
        return replace(self, prompt=prompt)

    def with_phases(self, phases: frozenset[str]) -> Request:
        return replace(self, phases=phases)


@dataclass(frozen=True)
class TokenScores:
    """Teacher-forced answer scoring on one phase's model: one entry per answer token, in order.

    Entry i is about answer token i, predicted from the prompt and the gold answer tokens before
    it (never from the model's own earlier predictions). Every field but `gold_ids` and `dist_ids`
    comes from the model of the phase the outcome was read for (`outcomes.scores(request, phase)`).

    pred_ids: the model's most likely token (argmax) at each position.
    gold_ids: the answer's own tokens (the same on both phases).
    logprobs: the natural-log probability of each gold token.
    gold_ranks: the rank of each gold token among the whole vocabulary, 1 = most likely (ties
        counted in its favour: 1 + the number of tokens strictly more likely). This is the rank to
        report; the order of `dist_ids` is not this model's order after an edit.
    dist_ids: for a request with `dist_top_k` = k, the UNEDITED model's k most likely ids at each
        position, most likely first; the post-edit outcome carries the very same ids (so that the
        two distributions are compared on one support), hence its order is the unedited model's.
        Empty without `dist_top_k`.
    dist_logprobs: the log-probabilities of `dist_ids` under this phase's model, aligned with
        `dist_ids` (after an edit they need not be in decreasing order). Empty without
        `dist_top_k`.
    """

    pred_ids: tuple[int, ...]
    gold_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    dist_ids: tuple[tuple[int, ...], ...] = ()
    dist_logprobs: tuple[tuple[float, ...], ...] = ()
    gold_ranks: tuple[int, ...] = ()

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
            "gold_ranks": list(self.gold_ranks),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TokenScores:
        return cls(
            tuple(data["pred_ids"]),
            tuple(data["gold_ids"]),
            tuple(data["logprobs"]),
            tuple(tuple(x) for x in data["dist_ids"]),
            tuple(tuple(x) for x in data["dist_logprobs"]),
            tuple(data["gold_ranks"]),
        )


@dataclass(frozen=True)
class Generation:
    """A continuation on one phase's model.

    token_ids: the new tokens only (the prompt excluded). For a request that stops at EOS (the
        default), cut before the first end-of-sequence token: at most `max_new_tokens`, fewer when
        the model stopped. With `stop_at_eos=False`, exactly `max_new_tokens` (end tokens kept).
    text: `token_ids` decoded with special tokens skipped (no prompt in front).
    """

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
    """The outcomes of one case's requests, by phase, as `Metric.score` sees them.

    Look an outcome up with a request equal to one the metric returned from `requests` (phases
    aside) and a phase among those it asked for: `scores` for a score request, `generation` for a
    generate request. When the evaluator scores the unedited model alone (`evaluate_pre`), both
    phases are that model's outcome.
    """

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
