"""How much device memory a job needs, estimated at plan time from the model's config alone.

A Ray run places each job on a worker whose device can hold it, and refuses before any model loads
a job that no worker's device can; `harness run --dry-run` shows the figure for every job. Nothing
is loaded: the model is built on PyTorch's meta device from its config (`weightless_handle`), so
its parameter count and widths are exact, and the method's hyperparameters are resolved on it as
they will be on the loaded model.

The estimate is the sum of three parts, in bytes:

- weights: every parameter once (tied embeddings count once), in the dtype the model loads in
  (`dtype_bytes`: 4 for float32 on a CPU, 2 for bfloat16 or float16 on a GPU);
- method state, for a method that edits weights, per layer it edits (the layers of its layer
  hyperparameters, `harness.hparams.layer_keys`; every layer when it has none): a snapshot of the
  layer's MLP weights for `undo` and their gradient (each in the model's dtype), two Adam moments
  in float32 (Kingma & Ba 2015, Algorithm 1: m and v, one value per parameter each), and a
  float32 second-moment matrix of the MLP's inner activations, intermediate x intermediate (ROME's
  key covariance C, Meng et al. 2022, eq. 2; MEMIT's per-layer statistics, eq. 11). Not every
  method keeps all of these (FT keeps no covariance), so this part is an upper bound; a method that
  edits through the context (IKE, ICE) keeps none of them;
- activations, the larger of the evaluation batch and the edit's backward pass. Evaluation runs
  without gradients, one padded batch of at most `EvalOptions.max_batch_tokens` tokens at a time:
  its logits (tokens x vocabulary, in the model's dtype and again in float32 for the log-softmax)
  and one layer's live tensors (tokens x (4 hidden + 2 intermediate)). An edit's backward pass
  keeps every layer's activations for the edited cases, `EDIT_TOKENS` tokens each.

It is an estimate, not a measurement: allocator slack, CUDA's own context (some hundreds of MiB)
and a method's unusual buffers are not in it. `HEADROOM` is the share of a device's memory a job
may be placed into.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.ground import HarnessError
from harness.runs.catalog import Catalog
from harness.runs.plan import Job

#: Tokens of one edited case in the edit's backward pass (prompt and target of a KnowEdit record).
EDIT_TOKENS = 64
#: The share of a device's memory that a job's estimate may fill.
HEADROOM = 0.9
GIB = 1024**3
MIB = 1024**2


def size_text(n: float) -> str:
    """Bytes as GiB (from 1 GiB) or MiB, one decimal."""
    return f"{n / GIB:.1f} GiB" if n >= GIB else f"{n / MIB:.1f} MiB"


@dataclass(frozen=True)
class MemoryEstimate:
    """A job's device memory, in bytes, by part (see the module docstring for each part)."""

    weights: int
    state: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.state + self.activations

    def __str__(self) -> str:
        return (
            f"~{size_text(self.total)} (weights {size_text(self.weights)}, method state "
            f"{size_text(self.state)}, activations {size_text(self.activations)})"
        )


def _edited_layers(schema: Mapping[str, Any], hparams: Mapping[str, Any], num_layers: int) -> set[int]:
    """The layers named by the method's layer hyperparameters (indices taken modulo the depth, so
    -1 is the last), or every layer when it has none."""
    from harness.hparams import layer_keys

    found: set[int] = set()
    for key in layer_keys(schema):
        value = hparams.get(key)
        for i in value if isinstance(value, list) else [value]:
            if isinstance(i, int) and not isinstance(i, bool) and -num_layers <= i < num_layers:
                found.add(i % num_layers)
    return found or set(range(num_layers))


def _hparams(method: Any, handle: Any, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The method's hyperparameters on the weightless model; a method whose defaults need the
    loaded model gets its schema defaults and the overrides."""
    from harness.hparams import resolve_hparams, schema_defaults

    try:
        return resolve_hparams(method, handle, overrides)
    except Exception:  # default_hparams may read weights, which a weightless model lacks
        return {**schema_defaults(method.hparams_schema), **overrides}


def _mlp_params(handle: Any, layer: int) -> int:
    adapter = handle.adapter
    names = {adapter.mlp_in_name(layer), adapter.mlp_out_name(layer)}
    return sum(p.numel() for name in names for p in adapter.module(name).parameters())


def estimate_job(job: Job, handle: Any, catalog: Catalog, dtype_bytes: int) -> MemoryEstimate:
    """The estimate of one job on the weightless `handle` of its model (`weightless_handle`)."""
    from harness.evaluation.options import EvalOptions

    adapter = handle.adapter
    model = handle.model
    weights = sum(p.numel() for p in model.parameters()) * dtype_bytes
    vocab = model.get_output_embeddings().weight.shape[0]
    hidden, inner, depth = adapter.hidden_size, adapter.intermediate_size, adapter.num_layers
    method = catalog.method(job.method)
    state = 0
    backward = 0
    if method.capabilities.edits_weights:
        hparams = _hparams(method, handle, job.overrides)
        layers = _edited_layers(method.hparams_schema, hparams, depth)
        per_param = 2 * dtype_bytes + 2 * 4  # snapshot and gradient; Adam's m and v in float32
        state = sum(_mlp_params(handle, i) * per_param + inner * inner * 4 for i in layers)
        tokens = job.batch_size * EDIT_TOKENS
        backward = tokens * (depth * (4 * hidden + 2 * inner) * dtype_bytes + vocab * (dtype_bytes + 4))
    tokens = EvalOptions().max_batch_tokens
    evaluation = tokens * (vocab * (dtype_bytes + 4) + (4 * hidden + 2 * inner) * dtype_bytes)
    return MemoryEstimate(weights, state, max(evaluation, backward))


def estimate_jobs(
    jobs: Sequence[Job], catalog: Catalog, dtype_bytes: int
) -> dict[str, MemoryEstimate | None]:
    """Job key -> its estimate; None for a job whose model's config is not readable here (a hub
    model not in the local cache: nothing can be said before it loads)."""
    from harness.models.shape import weightless_handle

    handles: dict[str, Any] = {}
    out: dict[str, MemoryEstimate | None] = {}
    for job in jobs:
        if job.model not in handles:
            alias = catalog.registry.models.locate(job.model)
            handles[job.model] = weightless_handle(alias[0] if alias else job.model, job.model)
        handle = handles[job.model]
        out[job.key] = None if handle is None else estimate_job(job, handle, catalog, dtype_bytes)
    return out


def dtype_bytes_for(device: str, gpus_per_job: float = 0) -> int:
    """Bytes per weight of the dtype the model loads in (`harness.models.load.resolve_dtype`): 2 on
    a GPU (a Ray job given GPUs, or `device` cuda, or auto with CUDA here), 4 on a CPU."""
    if gpus_per_job:
        return 2
    if device == "auto":
        import torch

        return 2 if torch.cuda.is_available() else 4
    return 2 if device.startswith("cuda") else 4


def refuse_unplaceable(
    estimates: Mapping[str, MemoryEstimate | None], capacities: Sequence[int], where: str
) -> None:
    """Raise HarnessError naming every job whose estimate exceeds `HEADROOM` of the largest of
    `capacities` (bytes of device memory per worker; `where` says what they are)."""
    largest = max(capacities, default=0)
    too_big = {key: e for key, e in estimates.items() if e is not None and e.total > HEADROOM * largest}
    if too_big:
        named = "; ".join(f"{key}: {e}" for key, e in too_big.items())
        raise HarnessError(
            f"{len(too_big)} job(s) fit on no device: the largest {where} holds {size_text(largest)} "
            f"({HEADROOM:.0%} of it usable): {named}. Give each job more devices (--gpus-per-job), use a "
            "larger device, or leave those jobs out"
        )
