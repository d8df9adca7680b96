"""Seeded index bookkeeping: seed mixing, the train/val split, class-stratified subsets.

All randomness here comes from `torch.Generator`s seeded from ``data.split_seed`` (never from the
training seed), so the same config always selects the same examples, on any machine.
"""

from __future__ import annotations

import torch

_MIX = 1_000_003
_MASK = (1 << 63) - 1


def mix_seed(*parts: int) -> int:
    """Fold integers into one non-negative 63-bit seed: ``mix_seed(a, b) == a * 1_000_003 + b``
    for small non-negative values (so ``mix_seed(seed, epoch)`` is the documented epoch seed)."""
    acc = 0
    for i, p in enumerate(parts):
        acc = int(p) if i == 0 else acc * _MIX + int(p)
    return acc & _MASK


def generator(*parts: int) -> torch.Generator:
    """A CPU generator seeded with ``mix_seed(*parts)``."""
    return torch.Generator().manual_seed(mix_seed(*parts))


def val_size(n: int, val_fraction: float) -> int:
    """How many of ``n`` training examples ``val_fraction`` holds out (the split below; plan estimates use it too)."""
    return int(round(val_fraction * n))


def split_train_val(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, val indices), both sorted: the last ``round(val_fraction * n)`` entries of a
    seeded permutation are the validation set (a random split, as in the official SSN code)."""
    n_val = val_size(n, val_fraction)
    perm = torch.randperm(n, generator=generator(seed))
    train_idx, val_idx = perm[: n - n_val], perm[n - n_val :]
    return train_idx.sort().values, val_idx.sort().values


def stratified_subset(labels: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """Sorted indices of ``k`` examples, balanced over classes where possible.

    Examples are dealt round-robin: shuffle (seeded), rank each example within its class, then take
    all rank-0 examples, then rank-1, ... (in shuffled order within a rank), so every class gets
    ``k // classes`` or one more, unless a class runs out (then the others fill in).
    """
    n = labels.shape[0]
    if k >= n:
        return torch.arange(n)
    perm = torch.randperm(n, generator=generator(seed))
    lab = labels[perm]
    order = torch.sort(lab, stable=True).indices  # positions in perm, grouped by class
    sorted_lab = lab[order]
    pos = torch.arange(n)
    group_start = torch.ones(n, dtype=torch.bool)
    group_start[1:] = sorted_lab[1:] != sorted_lab[:-1]
    starts = torch.cummax(torch.where(group_start, pos, torch.zeros_like(pos)), dim=0).values
    rank = torch.empty(n, dtype=torch.int64)
    rank[order] = pos - starts  # rank of perm[i] within its class
    key = rank * n + torch.arange(n)  # by rank, then by shuffled position
    chosen = perm[torch.argsort(key)[:k]]
    return chosen.sort().values
