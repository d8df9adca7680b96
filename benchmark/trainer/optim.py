"""The optimizer: SGD (Nesterov) or AdamW, with weight decay split by parameter *role*.

Roles come from ``accounting.parameter_roles`` (declared by the modules that own the parameters),
so "no decay on BN" and similar rules never depend on parameter names: the ViT recipes' "no decay for
norms, biases, the position embedding and the class token" is ``no_decay_roles = ["norm_bias",
"embedding", "head_bias"]`` (timm's and DeiT's rule: every 1-D parameter and the two embeddings). ``head_bias`` is
not an accounting role but a selector of the 1-D parameters of role ``head`` (the classifier's bias): the head's
weight and bias share the role ``head`` in the parameter tables, and the SGD recipes decay both.
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn as nn

from ..accounting import parameter_roles
from ..config import OptimConfig


def param_groups(model: nn.Module, weight_decay: float, no_decay_roles: Iterable[str]) -> list[dict]:
    exempt = set(no_decay_roles)
    decay, no_decay, names_decay, names_no = [], [], [], []
    for name, p, role in parameter_roles(model):
        if not p.requires_grad:
            continue
        if role in exempt or (role == "head" and p.dim() == 1 and "head_bias" in exempt):
            no_decay.append(p)
            names_no.append(name)
        else:
            decay.append(p)
            names_decay.append(name)
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay, "names": names_decay})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "names": names_no})
    return groups


def build_optimizer(model: nn.Module, cfg: OptimConfig, method_exempt: Iterable[str]) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay, set(method_exempt) | set(cfg.no_decay_roles))
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.betas[0], cfg.betas[1]), eps=cfg.eps)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)


def rebuild_optimizer(old: torch.optim.Optimizer, model: nn.Module, cfg: OptimConfig,
                      method_exempt: Iterable[str]) -> torch.optim.Optimizer:
    """A new optimizer for a changed parameter set, keeping the state (momentum) of kept params."""
    new = build_optimizer(model, cfg, method_exempt)
    for group in new.param_groups:
        group["lr"] = old.param_groups[0]["lr"]
        for p in group["params"]:
            if p in old.state:
                new.state[p] = old.state[p]
    return new


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
