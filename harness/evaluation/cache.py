"""Pre-edit outcomes on disk, so that every method and every rerun on the same model and probes
reuses them. One small JSON file per request, addressed by a hash of everything the outcome
depends on: the model's weights, the tokenizer, the protocol version of the engine, the numeric
settings and the request itself. A changed input is a different file, never a stale read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.cache import atomic_write_bytes, cache_dir, content_key
from harness.evaluation.options import EvalOptions
from harness.evaluation.requests import Outcome, Request, outcome_from_json

#: Bump when the engine computes any outcome differently (tokenization join, masking, decoding).
PROTOCOL_VERSION = 1


def tokenizer_identity(tokenizer) -> dict[str, Any]:
    """What about a tokenizer changes token ids: its class, vocabulary, specials and BOS/EOS rule."""
    vocab = sorted(tokenizer.get_vocab().items())
    return {
        "class": type(tokenizer).__name__,
        "vocab": content_key(vocab),
        "specials": [tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id],
        "empty": tokenizer("", add_special_tokens=True).input_ids,
    }


class PreCache:
    """Pre-edit outcomes of one model and tokenizer."""

    def __init__(self, handle, options: EvalOptions) -> None:
        self.root: Path = cache_dir("pre") / handle.fingerprint()[:16]
        self._base = {
            "protocol": PROTOCOL_VERSION,
            "model": handle.fingerprint(),
            "tokenizer": tokenizer_identity(handle.tokenizer),
            "padding_side": options.padding_side,
            "dtype": str(handle.dtype),
            "device": handle.device.type,
        }

    def path(self, request: Request) -> Path:
        key = content_key(self._base, request.identity())
        return self.root / key[:2] / f"{key}.json"

    def load(self, request: Request) -> Outcome | None:
        path = self.path(request)
        if not path.exists():
            return None
        return outcome_from_json(request.kind, json.loads(path.read_text()))

    def store(self, request: Request, outcome: Outcome) -> None:
        atomic_write_bytes(self.path(request), json.dumps(outcome.to_json()).encode())
