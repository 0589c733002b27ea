"""How an evaluation is run: recorded with the results, so that every number says how it was made."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from harness.ground import HarnessError, Metric

AliasPolicy = Literal["first", "best"]
POSITIVE = ("max_batch_tokens", "max_batch_size")


@dataclass(frozen=True)
class EvalOptions:
    """Evaluation settings.

    alias_policy: "first" scores only the first answer of a probe (the reference's rule, so numbers
    stay comparable with published ones); "best" takes the maximum over all aliases.
    padding_side: how batches are padded; results do not depend on it (tested), speed may.
    max_batch_tokens / max_batch_size: the size of one padded forward batch.
    seed: the run seed, from which every sampled generation's seed is derived per prompt; its
    default is a run's (`harness run --seed`, 0), so the evaluator used alone samples what a run does.
    use_cache: read and write pre-edit outcomes in the "pre" artifact cache (harness.cache).
    chat_template: put every request's prompt (with an in-context edit's context before it) in the
    model's chat template as one user turn (`render_chat`), pre- and post-edit alike; off by
    default, as in the KnowEdit study. A tokenizer without a chat template is refused.
    metric_options: values for options that metrics declare in `Metric.option_defaults` (option
    name -> value); an option left out takes the metric's default. An evaluator records (in
    `settings()`) the value of every option its metrics declare.
    """

    alias_policy: AliasPolicy = "first"
    padding_side: Literal["left", "right"] = "left"
    max_batch_tokens: int = 8192
    max_batch_size: int = 64
    seed: int = 0
    use_cache: bool = True
    chat_template: bool = False
    metric_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, allowed in (("alias_policy", ("first", "best")), ("padding_side", ("left", "right"))):
            if getattr(self, name) not in allowed:
                raise HarnessError(
                    f"EvalOptions.{name} must be one of {allowed}, got {getattr(self, name)!r}"
                )
        for name in POSITIVE:
            if getattr(self, name) <= 0:
                raise HarnessError(f"EvalOptions.{name} must be positive, got {getattr(self, name)}")

    def metric_option(self, metric: Metric | type[Metric], name: str) -> Any:
        """The value of option `name` of `metric`: the one set in `metric_options`, else the
        metric's default. Raises HarnessError when the metric declares no such option."""
        defaults = metric.option_defaults
        if name not in defaults:
            declared = ", ".join(defaults) or "none"
            raise HarnessError(
                f"metric {metric.name!r} declares no option {name!r} (its options: {declared})"
            )
        return self.metric_options.get(name, defaults[name])

    def to_json(self) -> dict[str, Any]:
        """The settings as one flat object (metric options beside the others), as manifests record
        them."""
        core = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "metric_options"}
        return {**core, **self.metric_options}
