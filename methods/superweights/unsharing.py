"""Coefficient unsharing: the epoch-end event that splits shared coefficient rows whose members' gradients
disagree (the official ``refine`` step), changing the parameter set during training.

A mixin of ``SuperWeights`` (it reads ``self.options`` and ``self.context``): the build side is
``method.py``, this is the training-time side.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from npasbench.contract import NPASModel
from npasbench.errors import ConfigError

from .built import SWBuilt
from .coefficients import RowMap, bank_uses, unshare
from .network import bank_name


def analysis_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy for the search and unsharing analyses: half-precision logits (autocast) are upcast to
    float32, float32 and float64 are kept (a float64 parity run must not be rounded to float32 here)."""
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return F.cross_entropy(logits, target)


class CoefficientUnsharing:
    """When and how SuperWeights unshares coefficient rows (options ``coefficient_unshare_*``)."""

    options: Any
    context: Any

    def unshare_due(self, epoch: int) -> bool:
        o = self.options
        e = epoch + 1
        if o.coefficient_unshare_epochs <= 0:
            return False
        if e == o.coefficient_unshare_epochs:
            return True
        gap = o.coefficient_unshare_epoch_gap
        return gap > 0 and e > o.coefficient_unshare_epochs and e % gap == 0

    def on_epoch_end(self, model: NPASModel, epoch: int, metrics: dict[str, float]) -> bool:
        if not self.unshare_due(epoch) or model.built(SWBuilt).info["coefficients"] == "own":
            return False
        ctx = self.context
        if ctx is None:
            raise ConfigError("superweights: coefficient unsharing needs the run's data; the trainer sets "
                              "method.context (call unshare_coefficients yourself outside the trainer)")
        loader = ctx.loader("train", seed=ctx.cfg.train.seed + 7919, drop_last=False)
        batches = self.options.coefficient_unshare_batches or len(loader)
        return self.unshare_coefficients(model, (b for _, b in zip(range(batches), loader.epoch(epoch))),
                                         total=min(batches, len(loader)), epoch=epoch + 1, progress=ctx.progress,
                                         agree=ctx.agree)

    def coefficient_grads(self, model: NPASModel, batches, total: int | None = None,
                          progress: bool = False) -> dict[int, dict[tuple[int, int], torch.Tensor]]:
        """Every member's loss gradient w.r.t. the coefficient rows, summed over ``batches`` (eval mode)."""
        tables = {k: model.shared[f"coef_{bank_name(k)}"] for k in model.built(SWBuilt).plan.bank_order()}
        grads = {m: {k: torch.zeros_like(t.rows) for k, t in tables.items()} for m in range(model.num_members)}
        was_training = model.training
        model.eval()
        try:
            for x, y in tqdm(batches, total=total, desc="coefficient analysis", unit="batch", disable=not progress,
                             leave=False):
                for m, member in enumerate(model.members):
                    model.zero_grad(set_to_none=True)
                    analysis_loss(member(x), y).backward()
                    for k in member.bank_keys:
                        g = tables[k].rows.grad
                        if g is not None:
                            grads[m][k] += g
        finally:
            model.zero_grad(set_to_none=True)
            model.train(was_training)
        return grads

    def unshare_coefficients(self, model: NPASModel, batches, total: int | None = None, epoch: int = 0,
                             progress: bool = False, agree: Callable[[Any], Any] = lambda v: v) -> bool:
        """The refine step on ``model`` in place; True when the coefficient rows changed. ``agree``: the run's
        ``RunContext.agree`` (under DDP every rank takes rank 0's decision: GPU reductions may differ in the
        last bit); the identity in one process."""
        built = model.built(SWBuilt)
        grads = self.coefficient_grads(model, batches, total, progress)
        new, sources = unshare(built.rows, bank_uses(built.plan), grads, self.options.coefficient_unshare_threshold)
        rows_json, sources_json = agree((new.to_json(), {f"{c},{w}": s for (c, w), s in sources.items()}))
        new = RowMap.from_json(rows_json)
        sources = {tuple(int(x) for x in k.split(",")): v for k, v in sources_json.items()}
        event = {"epoch": epoch, "rows_before": built.rows.total_rows(), "rows_after": new.total_rows(),
                 "banks_changed": len(sources)}
        built.info["unsharing"].append(event)
        if not sources:
            return False
        for key, src in sources.items():
            table = model.shared[f"coef_{bank_name(key)}"]
            table.resize(table.rows.data[torch.tensor(src, device=table.rows.device)])
        self._set_rows(model, new)
        return True

    def _set_rows(self, model: NPASModel, rows: RowMap) -> None:
        model.built(SWBuilt).rows = rows
        for member in model.members:
            member.set_rows(rows)
            member.refresh_sources()  # the tables are the same modules with new `rows` parameters

