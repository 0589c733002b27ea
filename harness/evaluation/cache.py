"""Pre-edit outcomes on disk, so that every method and every rerun on the same model and probes
reuses them. One small JSON file per request, addressed by a hash of everything the outcome
depends on: the model's weights, the tokenizer, the protocol version of the engine, the fields an
outcome holds, the numeric settings and the request itself. A changed input is a different file,
never a stale read."""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any, get_args

from harness.cache import ArtifactCache, Codec, content_key
from harness.evaluation.options import EvalOptions
from harness.evaluation.requests import Generation, Kind, Outcome, Request, TokenScores, outcome_from_json

#: Bump when the engine computes any outcome differently (tokenization join, masking, decoding).
#: A field added to an outcome needs no bump: the fields are part of every key (`OUTCOME_FIELDS`).
#: 2: the seam rule (whitespace where prompt and answer meet; generation prompts trimmed).
PROTOCOL_VERSION = 2
#: What each kind of outcome holds: a file written before a field existed is never read as one
#: that has it.
OUTCOME_FIELDS = {
    "score": [f.name for f in fields(TokenScores)],
    "generate": [f.name for f in fields(Generation)],
}


def tokenizer_identity(tokenizer) -> dict[str, Any]:
    """What about a tokenizer changes token ids: its class, vocabulary, specials and BOS/EOS rule."""
    vocab = sorted(tokenizer.get_vocab().items())
    return {
        "class": type(tokenizer).__name__,
        "vocab": content_key(vocab),
        "specials": [tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id],
        "empty": tokenizer("", add_special_tokens=True).input_ids,
    }


def _codec(kind: Kind) -> Codec[Outcome]:
    """Outcomes as JSON; decoding needs the request's kind (token scores or a generation)."""
    return Codec(
        ".json",
        dump=lambda outcome: json.dumps(outcome.to_json()).encode(),
        load=lambda data: outcome_from_json(kind, json.loads(data)),
    )


class PreCache:
    """Pre-edit outcomes of one model and tokenizer, under `pre/<fingerprint prefix>/`, spread over
    subfolders (a long run stores one file per request)."""

    def __init__(self, handle, options: EvalOptions) -> None:
        kind = f"pre/{handle.fingerprint()[:16]}"
        self._caches = {k: ArtifactCache(kind, _codec(k), fanout=2) for k in get_args(Kind)}
        self._base = {
            "protocol": PROTOCOL_VERSION,
            "outcome_fields": OUTCOME_FIELDS,
            "model": handle.fingerprint(),
            "tokenizer": tokenizer_identity(handle.tokenizer),
            "padding_side": options.padding_side,
            "dtype": str(handle.dtype),
            "device": handle.device.type,
        }

    def _key(self, request: Request) -> str:
        return content_key(self._base, request.identity())

    def load(self, request: Request) -> Outcome | None:
        """The stored outcome of `request` as the model was asked it (its prompt rendered in the
        chat template when the evaluation applies one, so the template's text is in the key)."""
        return self._caches[request.kind].load(self._key(request))

    def store(self, request: Request, outcome: Outcome) -> None:
        self._caches[request.kind].store(self._key(request), outcome)
