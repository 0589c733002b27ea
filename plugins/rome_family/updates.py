"""The closed-form weight updates of ROME and MEMIT, as the papers state them.

Shapes are named as in the papers, for an MLP output matrix W that maps a key k (the down-projection
input, size d_in) to a value v (the residual-stream write, size d_out):

    W [d_out, d_in],  k [d_in],  K [d_in, n],  R [d_out, n],  C [d_in, d_in]

Models that store the matrix transposed (GPT-2's Conv1D) are handled by the caller, which reads and
writes `W` through the adapter's `out_weight_transposed`. Nothing here touches a model.
"""

from __future__ import annotations

import torch

from harness.api import HarnessError


def rome_direction(k_star: torch.Tensor, c_inv: torch.Tensor | None = None) -> torch.Tensor:
    """u = C⁻¹k* (or k* itself without the second-moment adjustment), the input direction of the
    rank-one update. The covariance turns the update away from directions that many other keys use,
    which is what keeps unrelated facts intact.

    k_star [d_in], c_inv [d_in, d_in] -> u [d_in]
    """
    if k_star.dim() != 1:
        raise HarnessError(f"rome_direction expects a key vector [d_in], got shape {tuple(k_star.shape)}")
    return k_star if c_inv is None else c_inv.to(k_star.dtype) @ k_star


def rome_update(w: torch.Tensor, k_star: torch.Tensor, v_star: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """ΔW = (v* − W k*) uᵀ / (uᵀ k*): the smallest change along u after which (W + ΔW) k* = v*.

    w [d_out, d_in], k_star [d_in], v_star [d_out], u [d_in] -> ΔW [d_out, d_in]
    """
    d_out, d_in = w.shape
    if k_star.shape != (d_in,) or u.shape != (d_in,) or v_star.shape != (d_out,):
        raise HarnessError(
            f"rome_update: W is {tuple(w.shape)} but k* is {tuple(k_star.shape)}, u is {tuple(u.shape)} "
            f"and v* is {tuple(v_star.shape)}"
        )
    residual = v_star - w @ k_star  # [d_out]
    denominator = u @ k_star
    if not torch.isfinite(denominator) or denominator.abs() < 1e-12:
        raise HarnessError("rome_update: the update direction u is orthogonal to the key k*")
    return torch.outer(residual, u) / denominator


def memit_update(r: torch.Tensor, k: torch.Tensor, c: torch.Tensor, mom2_weight: float) -> torch.Tensor:
    """ΔW = R Kᵀ (λC + K Kᵀ)⁻¹, the least-squares change that writes the residuals R at the keys K
    while moving the outputs of the keys summarized by C as little as possible.

    Solved in float64 as the linear system (λC + K Kᵀ) ΔWᵀ = K Rᵀ, never by an explicit inverse.

    r [d_out, n], k [d_in, n], c [d_in, d_in] -> ΔW [d_out, d_in] (in r's dtype)
    """
    if r.dim() != 2 or k.dim() != 2 or r.shape[1] != k.shape[1] or c.shape != (k.shape[0], k.shape[0]):
        raise HarnessError(
            f"memit_update: R is {tuple(r.shape)}, K is {tuple(k.shape)}, C is {tuple(c.shape)}; "
            "expected R [d_out, n], K [d_in, n], C [d_in, d_in]"
        )
    k64, r64 = k.double(), r.double()
    a = mom2_weight * c.double() + k64 @ k64.T  # [d_in, d_in], symmetric positive definite
    delta_t = torch.linalg.solve(a, k64 @ r64.T)  # [d_in, d_out]
    return delta_t.T.to(r.dtype)


def spread_residual(z: torch.Tensor, current: torch.Tensor, layers_left: int) -> torch.Tensor:
    """MEMIT's residual for one layer: what the last edited layer still lacks (Z − H), shared equally
    by the layers not yet updated, so that no single layer carries the whole change.

    z [d, n], current [d, n] -> R [d, n]
    """
    if layers_left < 1:
        raise HarnessError(f"spread_residual needs at least one layer left, got {layers_left}")
    return (z - current) / layers_left


def clamp_norm(delta: torch.Tensor, reference: torch.Tensor, factor: float) -> torch.Tensor:
    """Scale δ down, if needed, so that ‖δ‖ ≤ factor·‖reference‖ (ROME's `clamp_norm_factor`):
    the optimized value may not drift arbitrarily far from the original one.

    delta [d], reference [d] -> [d]
    """
    limit = factor * reference.norm()
    norm = delta.norm()
    return delta * (limit / norm) if norm > limit else delta
