"""Seeded k-means (k-means++ seeding, Lloyd iterations, several restarts), numpy only.

The official code calls scikit-learn's KMeans without a seed; this one is deterministic for a
seed and guarantees exactly ``k`` non-empty clusters (an emptied cluster takes the point farthest
from its centre), so the search phase always returns exactly ``param_groups`` groups.
"""

from __future__ import annotations

import numpy as np


def _plus_plus(x: np.ndarray, k: int, rng: np.random.RandomState) -> np.ndarray:
    centres = [x[rng.randint(len(x))]]
    for _ in range(1, k):
        d = np.min(((x[:, None, :] - np.asarray(centres)[None]) ** 2).sum(-1), axis=1)
        total = d.sum()
        idx = rng.randint(len(x)) if total <= 0 else rng.choice(len(x), p=d / total)
        centres.append(x[idx])
    return np.asarray(centres, dtype=np.float64)


def kmeans(x: np.ndarray, k: int, seed: int = 0, n_init: int = 10, max_iter: int = 300,
           init: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Labels (0..k-1, every label used) and inertia of the best of ``n_init`` restarts.

    ``init``: start one run from these ``k`` centres instead (no seeding, no restarts): how the search-parity
    check starts from the official k-means's own initial centres (``npasbench.parity.ssn_search``)."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if not 1 <= k <= n:
        raise ValueError(f"k-means needs 1 <= k <= number of points ({n}), got k={k}")
    if init is not None and np.shape(init) != (k, x.shape[1]):
        raise ValueError(f"k-means init: need {k} centres of dimension {x.shape[1]}, got shape {np.shape(init)}")
    rng = np.random.RandomState(seed)
    best_labels, best_inertia = None, np.inf
    for _ in range(1 if init is not None else n_init):
        c = np.array(init, dtype=np.float64) if init is not None else _plus_plus(x, k, rng)
        labels = np.full(n, -1)
        for _ in range(max_iter):
            d = ((x[:, None, :] - c[None]) ** 2).sum(-1)
            new = d.argmin(1)
            for j in range(k):  # keep every cluster alive
                if not np.any(new == j):
                    far = d[np.arange(n), new].argmax()
                    new[far] = j
                    d[far] = 0
            if np.array_equal(new, labels):
                break
            labels = new
            c = np.stack([x[labels == j].mean(0) for j in range(k)])
        inertia = float(((x - c[labels]) ** 2).sum())
        if inertia < best_inertia - 1e-12:
            best_labels, best_inertia = labels.copy(), inertia
    assert best_labels is not None
    return best_labels, best_inertia
