"""Orthogonal rotations of factor loadings: varimax (Kaiser 1958) and quartimax.

A factor model's likelihood depends on the loadings W only through W Wᵀ, so W R fits the data
exactly as well for any orthogonal R. A rotation picks the R whose loadings are easiest to
read: varimax maximises the variance of the squared loadings within each factor, quartimax
their fourth powers summed over the whole matrix. Both are solved by the SVD iteration of
Kaiser's criterion, as R's ``GPArotation`` and scikit-learn's ``FactorAnalysis(rotation=...)``
do: with Λ = W R,

    R ← U Vᵀ,   where U S Vᵀ = svd(Wᵀ (Λ³ − γ Λ diag(Σ_j Λ_jk² / d))),

γ = 1 for varimax and 0 for quartimax, until the criterion sum(S) grows by less than a
relative ``tol``.
"""

from __future__ import annotations

import torch

__all__ = ["ROTATIONS", "orthogonal_rotation"]

#: the rotations :func:`orthogonal_rotation` knows, by name
ROTATIONS = ("varimax", "quartimax")


def orthogonal_rotation(
    W: torch.Tensor, method: str, tol: float = 1e-6, max_iter: int = 100
) -> torch.Tensor:
    """The loadings ``W`` (d, q) rotated by ``method`` ("varimax" or "quartimax"): W R with
    R (q, q) orthogonal, so that W R (W R)ᵀ = W Wᵀ."""
    d, q = W.shape
    gamma = 1.0 if method == "varimax" else 0.0
    R = torch.eye(q, dtype=W.dtype, device=W.device)
    criterion = 0.0
    for _ in range(max_iter):
        L = W @ R  # (d, q)
        target = L.pow(3) - gamma * L * (L.square().sum(0) / d)  # (d, q)
        U, S, Vh = torch.linalg.svd(W.T @ target)  # (q, q)
        R = U @ Vh
        new = float(S.sum())
        if criterion != 0.0 and new < criterion * (1 + tol):
            break
        criterion = new
    return W @ R
