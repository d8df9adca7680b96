"""``hashed``: HashedNets (Chen et al., "Compressing Neural Networks with the Hashing Trick", ICML 2015).

Virtual weight position p of layer l reads ``xi_l(p) * w_l[h_l(p)]``: a bucket hash h_l and a sign hash
xi_l in {-1, +1} (the paper's sign hashing, which makes collisions unbiased). Norm parameters and the
classifier bias are ordinary parameters; every conv, shortcut and the classifier weight is hashed. The
buckets hold ``bank = budget - (norms + classifier bias)`` entries, so the unique trainable parameters
equal the budget *exactly*; a budget at or below the unhashed parts is a ``BudgetError``. Without a
budget the buckets are ``bank_fraction`` (default 1/8) of the plain network's weights.

Two forms (option ``bank``):

- ``per_layer`` (default; the published method): every layer its own bucket vector, all at one
  compression rate: the buckets are split across layers in proportion to their virtual sizes (largest
  remainders, so the sizes add up to the bank exactly, at least one per layer). Layer l's buckets are
  drawn as that layer's own weights would be (kaiming normal, std sqrt(2 / fan_in)) and read as they are,
  so the virtual weights start as a plain network's and a gradient step moves them as it moves a plain
  network's (each bucket receives the summed gradient of its ~1/compression virtual weights, as in the
  paper's Eq. 8).
- ``shared``: one bucket vector for the whole network (a budget-only hashing baseline with no per-layer
  split). Layers of very different fan-in read the same entries, so the bank is N(0, 1) and layer l reads
  it through the fixed scale sqrt(2 / fan_in); that scale is applied with a *step-matched* gradient
  (forward ``s * w``, backward ``grad / s``), so the virtual weights move like a plain network's instead of
  by s^2 of its step (the form before issue 22, whose HashedNets reached 2.4-2.9% top-1 on the CPU grid
  against 11.8% unshared). Weight decay on the bank decays the virtual weights at the plain rate too.

A bucket budget larger than a layer's virtual weights would hold entries no weight reads, so each layer's
share (``shared``: the bank) is capped at its virtual size (the record says so).

Hashes: a 32-bit integer mix (Wellons' ``lowbias32``) of the position xor a per-layer key derived
from (``hash_seed``, layer index), computed in exact unsigned integer arithmetic (numpy uint32), so
indices are identical on every platform and library version. The bucket is ``(h * buckets) >> 32``, the sign
the top bit of a second hash. Indices (``int32`` when ``2 * bank < 2**31``) are non-persistent buffers:
not parameters, not counted, not in checkpoints -- rebuilt from the seed. All layers' bucket vectors are
stored as one flat parameter (``per_layer``: disjoint segments, so no bucket is read by two layers); sign
and bucket are one index into ``[flat, -flat]``, so a forward is one gather (``index_select``) over all
layers and its backward one scatter-add. With autograd off the generated weights are cached until the
bank changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn as nn

from npasbench.models.generated import GeneratedWeight, GeneratingNet
from npasbench.sdk import (BudgetError, BuildRequest, ConfigError, Method, MethodOptions, NPASModel,
                           backbone_fixed_params, create_backbone, register_method, weight_layers)

MASK32 = 0xFFFFFFFF
_M1, _M2 = 0x7FEB352D, 0x846CA68B


def hash32(x: int) -> int:
    """Wellons' lowbias32, a bijection on 32-bit integers (Python ints)."""
    x &= MASK32
    x ^= x >> 16
    x = (x * _M1) & MASK32
    x ^= x >> 15
    x = (x * _M2) & MASK32
    return x ^ (x >> 16)


def hash32_array(x: np.ndarray) -> np.ndarray:
    """``hash32`` elementwise on a uint32 array (numpy's uint32 products wrap modulo 2**32)."""
    x = x.astype(np.uint32, copy=True)
    x ^= x >> np.uint32(16)
    x *= np.uint32(_M1)
    x ^= x >> np.uint32(15)
    x *= np.uint32(_M2)
    x ^= x >> np.uint32(16)
    return x


def layer_keys(seed: int, layer: int) -> tuple[int, int]:
    """Two independent 32-bit keys (bucket, sign) of one layer."""
    base = hash32(hash32(seed) ^ hash32((layer + 1) * 0x9E3779B9))
    return hash32(base ^ 0x68E31DA4), hash32(base ^ 0xB5297A4D)


def hash_buckets(numel: int, layer: int, seed: int, buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """(bucket in [0, buckets), negative sign?) of each of a layer's ``numel`` positions (uint64, bool)."""
    k_bucket, k_sign = layer_keys(seed, layer)
    pos = np.arange(numel, dtype=np.uint32)
    bucket = (hash32_array(pos ^ np.uint32(k_bucket)).astype(np.uint64) * np.uint64(buckets)) >> np.uint64(32)
    negative = (hash32_array(pos ^ np.uint32(k_sign)) >> np.uint32(31)).astype(bool)
    return bucket, negative


def hash_indices(numel: int, layer: int, seed: int, bank: int, offset: int = 0, buckets: int | None = None) -> torch.Tensor:
    """Index into ``[flat, -flat]`` (``flat`` of ``bank`` entries) of each of a layer's ``numel`` positions (int64):
    the layer's buckets are ``flat[offset:offset + buckets]`` (default: the whole flat vector)."""
    bucket, negative = hash_buckets(numel, layer, seed, bank if buckets is None else buckets)
    index = bucket + np.uint64(offset) + negative.astype(np.uint64) * np.uint64(bank)
    return torch.from_numpy(index.astype(np.int64))


def split_buckets(total: int, sizes: list[int]) -> list[int]:
    """``total`` buckets split across layers of virtual ``sizes`` at one compression rate: proportional shares
    rounded by largest remainder (ties to the earlier layer), every layer at least one bucket and at most its
    size. Needs ``len(sizes) <= total <= sum(sizes)``."""
    n = sum(sizes)
    if not len(sizes) <= total <= n:
        raise ValueError(f"{total} buckets for {len(sizes)} layers of {n} weights")
    exact = [total * s / n for s in sizes]
    out = [min(s, max(1, math.floor(e))) for s, e in zip(sizes, exact)]
    while sum(out) != total:  # hand out (or take back) one bucket at a time where the rounding was furthest
        if sum(out) < total:
            i = max((i for i in range(len(sizes)) if out[i] < sizes[i]), key=lambda i: (exact[i] - out[i], -i))
            out[i] += 1
        else:
            i = max((i for i in range(len(sizes)) if out[i] > 1), key=lambda i: (out[i] - exact[i], -i))
            out[i] -= 1
    return out


def step_matched(w: torch.Tensor, scale: float) -> torch.Tensor:
    """``scale * w`` in the forward; in the backward the gradient reaches ``w`` divided by ``scale`` (not
    multiplied): an SGD step on ``w`` then moves ``scale * w`` by ``lr * grad``, as a plain weight moves."""
    if scale == 1.0:
        return w
    return w.detach() * scale + (w - w.detach()) / scale


class HashedBank(nn.Module):
    """All bucket vectors as one flat parameter, plus the hashed index of every virtual weight (a
    non-persistent buffer). ``layers``: (layer index, shape, offset of its buckets, number of its buckets,
    init std of its buckets); ``per_layer`` segments are disjoint, ``shared`` layers all read [0, size)."""

    npas_roles = {"flat": "bank"}

    def __init__(self, size: int, layers: list[tuple[int, tuple[int, ...], int, int, float]], seed: int) -> None:
        super().__init__()
        self.size, self.seed = size, seed
        self.flat = nn.Parameter(torch.empty(size))
        with torch.no_grad():
            segments = sorted({(off, n, std) for _, _, off, n, std in layers})
            for off, n, std in segments:
                self.flat[off:off + n].normal_(0.0, std)
        dtype = torch.int32 if 2 * size < 2**31 else torch.int64
        parts = [hash_indices(math.prod(shape), index, seed, size, off, n).to(dtype) for index, shape, off, n, _ in layers]
        self.register_buffer("index", torch.cat(parts) if parts else torch.zeros(0, dtype=dtype), persistent=False)

    def generate(self) -> torch.Tensor:
        """Every virtual weight (unscaled), in layer order: one gather from ``[flat, -flat]``."""
        return torch.cat([self.flat, -self.flat]).index_select(0, self.index)


class HashedNet(GeneratingNet):
    """A backbone whose weights are generated from the bucket vectors before each forward."""

    def __init__(self, backbone: nn.Module, bank: HashedBank, providers: list[GeneratedWeight],
                 slots: list[tuple[int, int, tuple[int, ...], float]]) -> None:
        super().__init__(backbone, [bank.flat])  # the hash indices never change
        object.__setattr__(self, "_bank", bank)  # registered in the model's `shared`
        object.__setattr__(self, "_providers", providers)
        self.slots = slots  # (offset, numel, shape, step-matched scale) per provider

    def produce(self) -> None:
        flat = self._bank.generate()
        for provider, (off, n, shape, scale) in zip(self._providers, self.slots):
            provider.current = step_matched(flat[off:off + n].view(shape), scale)


@dataclass(frozen=True)
class HashedOptions(MethodOptions):
    bank: Literal["per_layer", "shared"] = field(default="per_layer", metadata={"help": (
        "per_layer: every layer its own buckets at one compression rate, drawn at the layer's init std (the "
        "paper); shared: one bucket vector for all layers, read through a step-matched sqrt(2/fan_in) scale")})
    bank_fraction: float = field(default=0.125, metadata={"help": (
        "without a budget: the buckets hold this fraction of the plain network's weights (1/8); with a "
        "budget they are the budget minus norms and classifier bias")})
    hash_seed: int = field(default=0, metadata={"help": "seed of the bucket and sign hashes"})

    def __post_init__(self) -> None:
        if self.bank not in ("per_layer", "shared"):
            raise ConfigError(f"method.options.bank: must be one of 'per_layer', 'shared', got {self.bank!r}.")
        if not 0.0 < self.bank_fraction <= 1.0:
            raise ConfigError(f"method.options.bank_fraction: must be in (0, 1], got {self.bank_fraction}.")
        if self.hash_seed < 0:
            raise ConfigError(f"method.options.hash_seed: must be >= 0, got {self.hash_seed}.")


@register_method("hashed")
class Hashed(Method):
    Options = HashedOptions
    summary = "HashedNets: every weight read from per-layer buckets (or one shared bank) through a seeded bucket and sign hash."
    reference = "Chen et al., Compressing Neural Networks with the Hashing Trick, ICML 2015"

    def bank_size(self, fixed: int, sizes: list[int], budget: int | None, arch: str) -> tuple[int, bool]:
        """(buckets in all, capped at the number of virtual weights?)."""
        virtual = sum(sizes)
        least = len(sizes) if self.options.bank == "per_layer" else 1
        if budget is None:
            return min(virtual, max(least, int(round(self.options.bank_fraction * virtual)))), False
        bank = budget - fixed
        if bank < least:
            need = (f"more than its {fixed:,} norm and classifier-bias parameters (they are not hashed)" if least == 1
                    else f"its {fixed:,} norm and classifier-bias parameters (they are not hashed) plus one bucket for "
                         f"each of its {least} layers, {fixed + least:,} in all")
            raise BudgetError(
                f"budget: hashed (bank={self.options.bank}) on {arch} needs {need}, above the budget of {budget:,}. "
                f"Raise the budget to at least {fixed + least:,}."
            )
        return (virtual, True) if bank > virtual else (bank, False)

    def build(self, request: BuildRequest) -> NPASModel:
        net = create_backbone(request.arch, request.num_classes)
        layers = weight_layers(net)
        fixed = backbone_fixed_params(net)
        sizes = [l.spec.numel for l in layers]
        budget = request.budget.params if request.budget is not None else None
        size, capped = self.bank_size(fixed, sizes, budget, request.arch)
        stds = [math.sqrt(2.0 / l.spec.fan_in) for l in layers]  # the plain layers' kaiming-normal std
        if self.options.bank == "per_layer":
            buckets = split_buckets(size, sizes)
            offsets = [sum(buckets[:i]) for i in range(len(buckets))]
            table = [(l.spec.index, tuple(l.spec.shape), off, n, std) for l, off, n, std in zip(layers, offsets, buckets, stds)]
            scales = [1.0] * len(layers)
        else:
            buckets = [size] * len(layers)
            table = [(l.spec.index, tuple(l.spec.shape), 0, size, 1.0) for l in layers]
            scales = stds
        bank = HashedBank(size, table, self.options.hash_seed)
        providers, slots, off = [], [], 0
        for layer, scale in zip(layers, scales):
            p = GeneratedWeight(layer.spec.name)
            layer.set_provider(p)
            providers.append(p)
            slots.append((off, layer.spec.numel, tuple(layer.spec.shape), scale))
            off += layer.spec.numel
        member = HashedNet(net, bank, providers, slots)
        plan = {"bank": size, "virtual": sum(sizes), "fixed": fixed, "capped": capped,
                "index_dtype": str(bank.index.dtype).replace("torch.", ""),
                "buckets": {l.spec.name: n for l, n in zip(layers, buckets)} if self.options.bank == "per_layer" else None}
        return NPASModel([member], [request.arch], shared={"bank": bank}, built=plan)

    def record_info(self, model: NPASModel) -> dict[str, Any]:
        plan = model.built(dict)
        info = {
            "bank": plan["bank"], "bank_form": self.options.bank, "virtual_weights": plan["virtual"],
            "unhashed": plan["fixed"], "compression": plan["virtual"] / plan["bank"],
            "hash_seed": self.options.hash_seed, "index_dtype": plan["index_dtype"], "sign_hashing": True,
        }
        if self.options.bank == "per_layer":
            info["buckets_per_layer"] = plan["buckets"]
            info["init"] = "each layer's buckets N(0, 2 / fan_in), read unscaled (the plain layer's init)"
        else:
            info["init"] = "one N(0, 1) bank read through sqrt(2 / fan_in) per layer, gradient step-matched"
        if plan["capped"]:
            info["note"] = "budget above the plain network: the buckets are capped at the number of virtual weights"
        return info
