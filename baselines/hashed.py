"""``hashed``: HashedNets (Chen et al., "Compressing Neural Networks with the Hashing Trick", ICML 2015).

Every weight layer's weights (convs, shortcuts, classifier) are read from ONE shared bank through a
fixed hash: virtual weight position p of layer l reads ``xi(l, p) * bank[h(l, p)]`` with a bucket
hash h and a sign hash xi in {-1, +1} (the paper's sign hashing, which makes collisions unbiased).
Norm parameters and the classifier bias are ordinary parameters. So the bank is sized to make the
model's unique trainable parameters equal the budget *exactly*: ``bank = budget - (norms + classifier
bias)``; a budget at or below those is a ``BudgetError``. Without a budget the bank is
``bank_fraction`` (default 1/8) of the plain network's weights. A bank larger than the number of
virtual weights would hold entries no weight reads, so it is capped there (the record says so).

Differences from the paper, deliberate:
- one bank for the whole network (the paper gives each layer its own bucket vector at one
  compression rate); this is the NPAS suite's hashing baseline: a single budget, no per-layer split;
- a fixed (not learned) per-layer scale sqrt(2 / fan_in) on a N(0, 1) bank, so every layer starts
  at the kaiming variance of the plain network although layers of very different fan-in share one
  bank.

Hashes: a 32-bit integer mix (Wellons' ``lowbias32``) of the position xor a per-layer key derived
from (``hash_seed``, layer index), computed in exact unsigned integer arithmetic (numpy uint32), so
indices are identical on every platform and library version. The bucket is ``(h * bank) >> 32``, the sign the
top bit of a second hash. Indices (``int32`` when ``2 * bank < 2**31``) are non-persistent buffers:
not parameters, not counted, not in checkpoints -- rebuilt from the seed. Sign and bucket are one
index into ``[bank, -bank]``, so a forward is one gather (``index_select``) over all layers, and its
backward one scatter-add (``index_add``) into the bank. With autograd off the generated weights are
cached until the bank changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from npasbench.contract import BuildRequest, Method, MethodOptions, NPASModel
from npasbench.errors import BudgetError, ConfigError
from npasbench.models.generated import GeneratedWeight, GeneratingNet
from npasbench.models.registry import create_backbone
from npasbench.plugins import register_method

from .common import fixed_params, weight_layers

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


def hash_indices(numel: int, layer: int, seed: int, bank: int) -> torch.Tensor:
    """Index into ``[bank, -bank]`` of each of a layer's ``numel`` positions (int64)."""
    k_bucket, k_sign = layer_keys(seed, layer)
    pos = np.arange(numel, dtype=np.uint32)
    bucket = (hash32_array(pos ^ np.uint32(k_bucket)).astype(np.uint64) * np.uint64(bank)) >> np.uint64(32)
    negative = (hash32_array(pos ^ np.uint32(k_sign)) >> np.uint32(31)).astype(np.uint64)
    return torch.from_numpy((bucket + negative * np.uint64(bank)).astype(np.int64))


class HashedBank(nn.Module):
    """The one shared bank, plus the hashed index of every virtual weight (a non-persistent buffer)."""

    npas_roles = {"flat": "bank"}

    def __init__(self, size: int, layers: list[tuple[int, tuple[int, ...]]], seed: int) -> None:
        super().__init__()
        self.size, self.seed = size, seed
        self.flat = nn.Parameter(torch.randn(size))
        dtype = torch.int32 if 2 * size < 2**31 else torch.int64
        parts = [hash_indices(math.prod(shape), index, seed, size).to(dtype) for index, shape in layers]
        self.register_buffer("index", torch.cat(parts) if parts else torch.zeros(0, dtype=dtype), persistent=False)

    def generate(self) -> torch.Tensor:
        """Every virtual weight (unscaled), in layer order: one gather from ``[bank, -bank]``."""
        return torch.cat([self.flat, -self.flat]).index_select(0, self.index)


class HashedNet(GeneratingNet):
    """A backbone whose weights are generated from the shared bank before each forward."""

    def __init__(self, backbone: nn.Module, bank: HashedBank, providers: list[GeneratedWeight],
                 slots: list[tuple[int, int, tuple[int, ...], float]]) -> None:
        super().__init__(backbone, [bank.flat])  # the hash indices never change
        object.__setattr__(self, "_bank", bank)  # registered in the model's `shared`
        object.__setattr__(self, "_providers", providers)
        self.slots = slots  # (offset, numel, shape, scale) per provider

    def produce(self) -> None:
        flat = self._bank.generate()
        for provider, (off, n, shape, scale) in zip(self._providers, self.slots):
            provider.current = flat[off:off + n].view(shape) * scale


@dataclass(frozen=True)
class HashedOptions(MethodOptions):
    bank_fraction: float = field(default=0.125, metadata={"help": (
        "without a budget: the bank holds this fraction of the plain network's weights (1/8); with a "
        "budget the bank is the budget minus norms and classifier bias")})
    hash_seed: int = field(default=0, metadata={"help": "seed of the bucket and sign hashes"})

    def __post_init__(self) -> None:
        if not 0.0 < self.bank_fraction <= 1.0:
            raise ConfigError(f"method.options.bank_fraction: must be in (0, 1], got {self.bank_fraction}.")
        if self.hash_seed < 0:
            raise ConfigError(f"method.options.hash_seed: must be >= 0, got {self.hash_seed}.")


@register_method("hashed")
class Hashed(Method):
    Options = HashedOptions
    summary = "HashedNets: every weight read from one shared bank through a seeded bucket and sign hash."
    reference = "Chen et al., Compressing Neural Networks with the Hashing Trick, ICML 2015"

    def bank_size(self, fixed: int, virtual: int, budget: int | None, arch: str) -> tuple[int, bool]:
        """(bank size, capped at the number of virtual weights?)."""
        if budget is None:
            return max(1, int(round(self.options.bank_fraction * virtual))), False
        bank = budget - fixed
        if bank < 1:
            raise BudgetError(
                f"budget: hashed on {arch} needs more than its {fixed:,} norm and classifier-bias parameters "
                f"(they are not hashed), above or at the budget of {budget:,}. Raise the budget above {fixed:,}."
            )
        return (virtual, True) if bank > virtual else (bank, False)

    def build(self, request: BuildRequest) -> NPASModel:
        net = create_backbone(request.arch, request.num_classes)
        layers = weight_layers(net)
        fixed = fixed_params(net)
        virtual = sum(l.spec.numel for l in layers)
        budget = request.budget.params if request.budget is not None else None
        size, capped = self.bank_size(fixed, virtual, budget, request.arch)
        bank = HashedBank(size, [(l.spec.index, l.spec.shape) for l in layers], self.options.hash_seed)
        providers, slots, off = [], [], 0
        for layer in layers:
            p = GeneratedWeight(layer.spec.name)
            layer.set_provider(p)
            providers.append(p)
            slots.append((off, layer.spec.numel, tuple(layer.spec.shape), math.sqrt(2.0 / layer.spec.fan_in)))
            off += layer.spec.numel
        member = HashedNet(net, bank, providers, slots)
        plan = {"bank": size, "virtual": virtual, "fixed": fixed, "capped": capped,
                "index_dtype": str(bank.index.dtype).replace("torch.", "")}
        return NPASModel([member], [request.arch], shared={"bank": bank}, built=plan)

    def record_info(self, model: NPASModel) -> dict[str, Any]:
        plan = model.built(dict)
        info = {
            "bank": plan["bank"], "virtual_weights": plan["virtual"], "unhashed": plan["fixed"],
            "compression": plan["virtual"] / plan["bank"], "hash_seed": self.options.hash_seed,
            "index_dtype": plan["index_dtype"], "sign_hashing": True,
            "scale": "fixed per layer: sqrt(2 / fan_in) on a N(0, 1) bank",
        }
        if plan["capped"]:
            info["note"] = "budget above the plain network: the bank is capped at the number of virtual weights"
        return info
