"""AlphaEdit's null-space projection P of a layer's preserved keys, as a managed artifact.

The keys K₀ whose outputs an edit must keep are summarized, as for MEMIT, by their second moment
C = K₀K₀ᵀ/N (`second_moment`): C and K₀ have the same left null space. Its eigenvectors Û with
eigenvalues below `nullspace_threshold` span the directions the preserved keys (almost) never take,
and P = Û Ûᵀ projects onto them (Fang et al., 2025, section 3; the reference's `get_project`). An
update ΔW = Δ P then gives ΔW k₀ ≈ 0 for every preserved key.

An eigendecomposition of a d_in x d_in matrix takes seconds at d_in of a few thousand, so P is
computed once per (model, layer, statistics, threshold) and stored on disk under a content key of
everything that determines it (`$HARNESS_HOME/nullspace`), next to the statistics it comes from.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from harness.api import TORCH_CODEC, ArtifactCache, HarnessError, content_key
from harness_plugins.rome_family.second_moment import StatsConfig, resolve_corpus, second_moments, stats_key

if TYPE_CHECKING:
    from harness.api import ModelHandle

_PROJECTIONS: ArtifactCache[torch.Tensor] = ArtifactCache("nullspace", TORCH_CODEC)


def null_space_projector(c: torch.Tensor, threshold: float) -> torch.Tensor:
    """P = Û Ûᵀ [d_in, d_in] (float32) for the eigenvectors Û of the symmetric C [d_in, d_in] whose
    eigenvalues are below `threshold` (C is positive semi-definite, so these are its singular
    values, as the reference takes them from an SVD). Computed in float64.

    Raises HarnessError when no eigenvalue is below the threshold: P would be zero and no edit
    could be written (raise `nullspace_threshold`)."""
    values, vectors = torch.linalg.eigh(c.double())
    small = vectors[:, values < threshold]  # [d_in, m]
    if small.shape[1] == 0:
        raise HarnessError(
            f"nullspace_threshold {threshold:g} is below every eigenvalue of the key statistics "
            f"(smallest {values.min().item():.3g}): the null space is empty and no edit could be written; "
            "raise nullspace_threshold"
        )
    return (small @ small.T).float()


def null_space_projections(
    handle: ModelHandle, layers: Sequence[int], config: StatsConfig, threshold: float
) -> dict[int, torch.Tensor]:
    """P [d_in, d_in] for each layer, from disk or from the layer's statistics C (then stored)."""
    corpus = resolve_corpus(config.corpus, handle, config)
    result = {}
    for layer in dict.fromkeys(layers):
        key = content_key("nullspace", stats_key(handle, layer, corpus, config), float(threshold))

        def compute(layer: int = layer) -> torch.Tensor:
            return null_space_projector(second_moments(handle, [layer], config)[layer], threshold)

        result[layer] = _PROJECTIONS.get_or_compute(key, compute)
    return result
