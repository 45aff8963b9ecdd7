"""Clusterings used to build the ``same_features`` / ``same_grad`` groups (ss_logreg §3 phase 5).

:func:`single_linkage_fcluster` is ``scipy.cluster.hierarchy.fclusterdata(X, 1)`` (single
linkage, Euclidean, ``'inconsistent'`` criterion, t = 1, depth 2) with the pairwise
distances computed by blocked matrix products instead of ``pdist`` (about 10x faster).
For integer-valued features (hospital, spam counts) the products are exact, so the
distances are bit-identical to ``pdist``; otherwise they agree to rounding, and the tree
is the same up to exact ties (as with fastcluster, spec §6 E11).
"""
from __future__ import annotations

import numpy as np
from scipy.cluster.hierarchy import fcluster, inconsistent, linkage


def condensed_euclidean(X: np.ndarray, block: int = 2048) -> np.ndarray:
    """The condensed distance vector of ``pdist(X)`` via ``|x|^2 + |y|^2 - 2 x.y``."""
    X = np.asarray(X, dtype=np.float64)
    n = X.shape[0]
    sq = np.einsum("ij,ij->i", X, X)
    out = np.empty(n * (n - 1) // 2)
    pos = 0
    for start in range(0, n, block):
        stop = min(start + block, n)
        D2 = sq[start:stop, None] + sq[None, :] - 2.0 * (X[start:stop] @ X.T)
        np.maximum(D2, 0.0, out=D2)
        D = np.sqrt(D2)
        for r in range(start, stop):
            row = D[r - start, r + 1:]
            out[pos:pos + row.size] = row
            pos += row.size
    return out


def single_linkage_fcluster(X: np.ndarray, t: float = 1.0, depth: int = 2) -> np.ndarray:
    """Flat cluster labels (1..k) equal to ``fclusterdata(X, t)`` with scipy's defaults."""
    Z = linkage(condensed_euclidean(X), method="single")
    R = inconsistent(Z, d=depth)
    return fcluster(Z, t=t, criterion="inconsistent", depth=depth, R=R)
