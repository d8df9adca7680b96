"""Parameter containers of SuperWeight networks, each tagged with its accounting role.

- ``TemplateBank``: one (cluster, level) bank, ``templates x piece`` entries (role ``bank``);
- ``CoefficientTable``: the bank's coefficient rows (role ``coefficients``). A *use* (one member's
  layer reading the bank) points at a row; uses that share coefficients point at the same row,
  so sharing and unsharing are index changes, not module surgery, and the row map is plain data
  that a checkpoint stores (``extra_state``);
- ``Projection``: ``emb`` only: embedding -> coefficients, one per bank (role ``generators``).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn


class TemplateBank(nn.Module):
    npas_roles = {"templates": "bank"}

    OFFICIAL_STD = math.sqrt(2.0 / 9.0)

    def __init__(self, templates: int, numel: int, tail: str = "zeros", std: float | None = None) -> None:
        super().__init__()
        self.templates = nn.Parameter(torch.empty(templates, numel))
        self.reset_parameters(tail, std)

    def reset_parameters(self, tail: str = "zeros", std: float | None = None) -> None:
        """The official init: ``kaiming_normal_`` over the bank viewed as (-1, 3, 3), i.e. N(0, 2/9),
        for the first ``n - n % 9`` entries. The official code leaves the last ``n % 9`` entries
        uninitialised (whatever memory held); here they are zero (or also N(0, 2/9)). ``std``: another
        standard deviation (option ``bank_init = "fan_in"``), same draw otherwise."""
        flat = self.templates.data.view(-1)
        n = flat.numel()
        head = (n // 9) * 9
        std = self.OFFICIAL_STD if std is None else std
        with torch.no_grad():
            flat[:head].normal_(0.0, std)
            if tail == "zeros":
                flat[head:].zero_()
            else:
                flat[head:].normal_(0.0, std)


class CoefficientTable(nn.Module):
    npas_roles = {"rows": "coefficients"}

    def __init__(self, values: torch.Tensor) -> None:
        """``values``: the initial rows (``coefficients.initial_coefficients``: the official draw)."""
        super().__init__()
        self.rows = nn.Parameter(values.detach().clone())

    def resize(self, values: torch.Tensor) -> None:
        """Replace the rows (unsharing): a new parameter, so the optimizer must be rebuilt."""
        self.rows = nn.Parameter(values.detach().clone().to(self.rows.device, self.rows.dtype))


class Projection(nn.Linear):
    """``emb``: a use's embedding row -> its K template coefficients (official ``_coeff_proj``)."""

    npas_roles = {"weight": "generators", "bias": "generators"}
