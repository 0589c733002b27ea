"""How an evaluation is run: recorded with the results, so that every number says how it was made."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from harness.api import HarnessError

AliasPolicy = Literal["first", "best"]
POSITIVE = ("max_batch_tokens", "max_batch_size", "fluency_max_new_tokens", "generation_max_new_tokens")


@dataclass(frozen=True)
class EvalOptions:
    """Evaluation settings.

    alias_policy: "first" scores only the first answer of a probe (the reference's rule, so numbers
    stay comparable with published ones); "best" takes the maximum over all aliases.
    padding_side: how batches are padded; results do not depend on it (tested), speed may.
    max_batch_tokens / max_batch_size: the size of one padded forward batch.
    seed: the run seed, from which every sampled generation's seed is derived per prompt.
    fluency_max_new_tokens / fluency_top_k: the sampled continuation that fluency is measured on.
    generation_max_new_tokens: the greedy continuation that `contains` checks.
    kl_top_k: how many of the unedited model's most likely tokens a KL locality keeps per position.
    use_cache: read and write pre-edit outcomes under harness.cache.cache_dir("pre").
    """

    alias_policy: AliasPolicy = "first"
    padding_side: Literal["left", "right"] = "left"
    max_batch_tokens: int = 8192
    max_batch_size: int = 64
    seed: int = 42
    fluency_max_new_tokens: int = 100
    fluency_top_k: int = 5
    generation_max_new_tokens: int = 32
    kl_top_k: int = 64
    use_cache: bool = True

    def __post_init__(self) -> None:
        for name, allowed in (("alias_policy", ("first", "best")), ("padding_side", ("left", "right"))):
            if getattr(self, name) not in allowed:
                raise HarnessError(
                    f"EvalOptions.{name} must be one of {allowed}, got {getattr(self, name)!r}"
                )
        for name in POSITIVE:
            if getattr(self, name) <= 0:
                raise HarnessError(f"EvalOptions.{name} must be positive, got {getattr(self, name)}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
