"""The closed-form weight updates of ROME, MEMIT, EMMET and AlphaEdit, as the papers state them.

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
    _check_batch("memit_update", r, k, c)
    k64, r64 = k.double(), r.double()
    a = mom2_weight * c.double() + k64 @ k64.T  # [d_in, d_in], symmetric positive definite
    delta_t = torch.linalg.solve(a, k64 @ r64.T)  # [d_in, d_out]
    return delta_t.T.to(r.dtype)


def emmet_update(r: torch.Tensor, k: torch.Tensor, c: torch.Tensor, emmet_lambda: float) -> torch.Tensor:
    """EMMET's equality-constrained batched update (Gupta et al., 2024, "A Unified Framework for
    Model Editing", the closed form of min ‖ΔW K₀‖ s.t. (W + ΔW) K = V):

        ΔW = R (Kᵀ C⁻¹ K + λ I)⁻¹ Kᵀ C⁻¹

    With λ = 0 every key maps exactly to its residual, ΔW K = R, moving the outputs of the keys
    summarized by C as little as possible; λ > 0 (the reference's `emmet_lambda`) keeps the n x n
    system solvable when two keys are nearly parallel, at the price of a slightly inexact write.
    For one key it is ROME's update along C⁻¹k. Solved in float64 by linear systems, no inverse.

    r [d_out, n], k [d_in, n], c [d_in, d_in] -> ΔW [d_out, d_in] (in r's dtype)
    """
    _check_batch("emmet_update", r, k, c)
    k64 = k.double()
    c_inv_k = torch.linalg.solve(c.double(), k64)  # [d_in, n]
    d = k64.T @ c_inv_k + emmet_lambda * torch.eye(k.shape[1], dtype=torch.float64, device=k.device)
    return (r.double() @ torch.linalg.solve(d, c_inv_k.T)).to(r.dtype)


def alphaedit_update(
    r: torch.Tensor, k: torch.Tensor, projection: torch.Tensor, preserved: torch.Tensor, l2: float
) -> torch.Tensor:
    """AlphaEdit's null-space-constrained update (Fang et al., 2025): the closed form the paper
    derives for ‖(W + Δ P) K − V‖² + ‖Δ P‖² + ‖Δ P K_p‖², the update being ΔW = Δ P,

        ΔW = R Kᵀ P (K Kᵀ P + K_p K_pᵀ P + l2 I)⁻¹

    (the paper writes l2 = 1; its reference code weighs the norm term with `L2`).

    P [d_in, d_in] projects onto the null space of the preserved keys' statistics C (`nullspace`),
    and `preserved` = K_p K_pᵀ sums the keys of edits already made (zero for the first). Since
    ΔW = R Kᵀ (P A + l2 I)⁻¹ P with A = K Kᵀ + K_p K_pᵀ, every row of ΔW lies in P's range:
    ΔW (I − P) = 0, so a key in the span C covers (the knowledge to preserve) maps as before.
    Solved in float64 as the reference solves it, (P A + l2 I) ΔWᵀ = P K Rᵀ.

    r [d_out, n], k [d_in, n], projection [d_in, d_in], preserved [d_in, d_in] -> ΔW [d_out, d_in]
    """
    _check_batch("alphaedit_update", r, k, projection)
    if preserved.shape != projection.shape:
        raise HarnessError(
            f"alphaedit_update: K_p K_pᵀ is {tuple(preserved.shape)}, P is {tuple(projection.shape)}"
        )
    k64, p64 = k.double(), projection.double()
    a = p64 @ (k64 @ k64.T + preserved.double())
    a += l2 * torch.eye(a.shape[0], dtype=torch.float64, device=a.device)
    return torch.linalg.solve(a, p64 @ k64 @ r.double().T).T.to(r.dtype)


def _check_batch(name: str, r: torch.Tensor, k: torch.Tensor, square: torch.Tensor) -> None:
    """Raise HarnessError unless R [d_out, n], K [d_in, n] and a [d_in, d_in] matrix fit together."""
    if r.dim() != 2 or k.dim() != 2 or r.shape[1] != k.shape[1] or square.shape != (k.shape[0], k.shape[0]):
        raise HarnessError(
            f"{name}: R is {tuple(r.shape)}, K is {tuple(k.shape)}, C is {tuple(square.shape)}; "
            "expected R [d_out, n], K [d_in, n], C [d_in, d_in]"
        )


def spread_residual(
    z: torch.Tensor, current: torch.Tensor, layers_left: int, *, power: float = 1.0
) -> torch.Tensor:
    """MEMIT's residual for one layer: what the last edited layer still lacks (Z − H), shared equally
    by the layers not yet updated, so that no single layer carries the whole change. PMET's
    reference code divides by √(layers left) instead (`power` 0.5): each layer then takes a larger
    share, as the MLP outputs it targets are reached only in part through the layers below.

    z [d, n], current [d, n] -> R [d, n] = (Z − H) / layers_left ** power
    """
    if layers_left < 1:
        raise HarnessError(f"spread_residual needs at least one layer left, got {layers_left}")
    return (z - current) / layers_left**power


def clamp_norm(delta: torch.Tensor, reference: torch.Tensor, factor: float) -> torch.Tensor:
    """Scale δ down, if needed, so that ‖δ‖ ≤ factor·‖reference‖ (ROME's `clamp_norm_factor`):
    the optimized value may not drift arbitrarily far from the original one.

    delta [d], reference [d] -> [d]
    """
    limit = factor * reference.norm()
    norm = delta.norm()
    return delta * (limit / norm) if norm > limit else delta
