"""SSN weight generation: one parameter group's bank, coefficients and upsamplers, and the batched
forward that turns them into every layer's weight.

Batching: a layer's block always starts at a multiple of its template size, so the bank is viewed
as a table of templates and layers with the same template shape, template count and layer shape
form a *signature*. A signature without resizing is mixed by ``_MixTemplates``: one matrix product
per layer straight from the bank's contiguous block (no gathered copy of the K templates), and a
backward that accumulates every layer's template gradient into one bank-sized buffer. Autograd's own
version (gather, ``bmm``, per-layer select) allocated a zero-filled full-size gradient for every
layer's select and a K-times-the-weights copy for the gather: on a ViT (48 linears, K = 8) that was
most of the SSN-only time per step. ``inter`` upsampling is one ``index_select`` + ``interpolate``
per signature. The official code instead slices the bank and mixes templates layer by layer; both
compute the same weights (a test checks it against a per-layer reference).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .plan import GroupPlan, LayerPlan


class Bank(nn.Module):
    """A group's flat parameter vector."""

    npas_roles = {"flat": "bank"}

    def __init__(self, size: int) -> None:
        super().__init__()
        self.flat = nn.Parameter(torch.empty(size))


class LayerTable(nn.Module):
    """One row per layer of a group with K templates, orthogonally initialised as the official code:
    the layers' template coefficients (``wavg``, width K) or their embeddings (``emb``, paper Sec. 3.1,
    width ``emb_size``; a group-level linear map turns them into coefficients)."""

    npas_roles = {"table": "coefficients"}

    def __init__(self, rows: int, width: int) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.zeros(rows, width))
        nn.init.orthogonal_(self.table.data)


class Projection(nn.Linear):
    """Embedding -> K coefficients, shared by the group's layers with K templates."""

    npas_roles = {"weight": "generators", "bias": "generators"}


class Upsampler(nn.Module):
    """``mask`` / ``wavg`` / ``repeat`` upsampling of a bank smaller than its layer (K = 1).

    - repeat: the bank, read in windows of 9*window entries, repeated ``mult`` more times;
    - mask: the extra copies are scaled per position of a learned 9*window-periodic mask;
    - wavg: ``mult + 1`` learned mixes of the bank's two halves (interleaved pairs).
    """

    npas_roles = {"weights": "generators"}

    def __init__(self, kind: str, window: int, mult: int) -> None:
        super().__init__()
        self.kind, self.window, self.mult = kind, window, mult
        if kind == "mask":
            n = 9 * window * mult
            self.weights = nn.Parameter(torch.ones(n) / float(n))
        elif kind == "wavg":
            w = torch.zeros((mult + 1) * 2, 2)
            nn.init.orthogonal_(w)
            self.weights = nn.Parameter(w.unsqueeze(-1))
        elif kind != "repeat":
            raise ValueError(f"unknown upsample type {kind!r}")

    def forward(self, x: torch.Tensor, numel: int) -> torch.Tensor:
        x = x.reshape(-1)
        win = 2 if self.kind == "wavg" else 9 * self.window
        x = x[: x.numel() - x.numel() % win].view(-1, win)
        if self.kind == "mask":
            w = self.weights[: win * self.mult].view(self.mult, 1, win)
            x = torch.cat([x.unsqueeze(0), x.unsqueeze(0) * w], 0)
        elif self.kind == "repeat":
            x = x.unsqueeze(0).expand(self.mult + 1, -1, -1)
        else:
            x = (x.reshape(1, win, -1) * self.weights).sum(1)
        out = x.reshape(-1)
        if out.numel() < numel:
            raise RuntimeError(f"{self.kind} upsampling produced {out.numel()} of {numel} weights")
        return out[:numel]


def _template_table(flat: torch.Tensor, tn: int) -> torch.Tensor:
    """The bank (or its gradient) viewed as rows of ``tn`` entries; a tail shorter than a row is left out."""
    return flat[: (flat.numel() // tn) * tn].view(-1, tn)


class _MixTemplates(torch.autograd.Function):
    """Every layer of one signature: ``w_j = c_j @ table[first_j : first_j + K]`` (``c`` = None: K = 1,
    the template itself). Returns one flat weight per layer; overlapping blocks (a bank smaller than
    its layers wrap around) accumulate their gradients in order."""

    @staticmethod
    def forward(ctx, flat: torch.Tensor, coefs: torch.Tensor | None, firsts: tuple[int, ...], k: int,
                tn: int) -> tuple[torch.Tensor, ...]:
        table = _template_table(flat, tn)
        if coefs is None:
            outs = tuple(table[f].clone() for f in firsts)
        else:
            c = coefs.to(table.dtype)
            outs = tuple(torch.mv(table[f:f + k].t(), c[j]) for j, f in enumerate(firsts))
        ctx.save_for_backward(flat, coefs)
        ctx.meta = (firsts, k, tn)
        return outs

    @staticmethod
    def backward(ctx, *grads: torch.Tensor):
        flat, coefs = ctx.saved_tensors
        firsts, k, tn = ctx.meta
        grad_flat = torch.zeros_like(flat) if ctx.needs_input_grad[0] else None
        gtable = _template_table(grad_flat, tn) if grad_flat is not None else None
        table = _template_table(flat, tn)
        grad_c = None
        if coefs is None:
            if gtable is not None:
                for g, f in zip(grads, firsts):
                    gtable[f].add_(g.reshape(-1))
        else:
            c = coefs.to(table.dtype)
            if ctx.needs_input_grad[1]:
                grad_c = torch.stack([torch.mv(table[f:f + k], g.reshape(-1).to(table.dtype))
                                      for g, f in zip(grads, firsts)]).to(coefs.dtype)
            if gtable is not None:
                for j, (g, f) in enumerate(zip(grads, firsts)):
                    gtable[f:f + k].addr_(c[j], g.reshape(-1).to(table.dtype))
        return grad_flat, grad_c, None, None, None


@dataclass
class _Signature:
    layers: list[int]  # positions in group.plans
    k: int
    template_numel: int
    shape: tuple[int, ...]
    in_shape: tuple[int, ...] | None
    slots: torch.Tensor  # (L*K,) template indices into the bank's template table
    firsts: tuple[int, ...]  # each layer's first template index
    coef_rows: torch.Tensor | None  # (L,) rows of the coefficient table


class SSNGroup(nn.Module):
    """Storage and generator of one parameter group."""

    def __init__(self, group: GroupPlan, plans: list[LayerPlan], *, share_type: str, upsample_type: str,
                 upsample_window: int, emb_size: int, learn_groups: bool, tail_init: str = "zeros") -> None:
        super().__init__()
        self.group_id = group.id
        self.plans = plans
        self.share_type = share_type
        self.learn_groups = learn_groups
        self.bank = Bank(group.bank)
        self.coefficients = nn.ModuleDict()
        self.projections = nn.ModuleDict()
        self.upsamplers = nn.ModuleDict()
        if share_type in ("wavg", "emb"):
            for k, rows in sorted(group.coef_counts.items()):
                self.coefficients[str(k)] = LayerTable(rows, k if share_type == "wavg" else emb_size)
                if share_type == "emb":
                    self.projections[str(k)] = Projection(emb_size, k)
        for lp in plans:
            if lp.needs_resize and lp.in_shape is None and lp.upsample_mult > 0:
                self.upsamplers[str(lp.index)] = Upsampler(upsample_type, upsample_window, lp.upsample_mult)
        self._init_bank(tail_init)
        self._build_signatures()

    # -- initialisation (as the official SharedParameters) -------------------------------------
    @torch.no_grad()
    def _init_bank(self, tail_init: str) -> None:
        flat = self.bank.flat.data
        n = flat.numel()
        body = (n // 9) * 9
        flat.zero_()
        nn.init.kaiming_normal_(flat[:body].view(-1, 3, 3))
        if body < n and tail_init == "kaiming":
            flat[body:].normal_(0.0, math.sqrt(2.0 / 9.0))
        if self.learn_groups:
            return  # the official search bank gets only the 3x3 init (no per-layer blocks)
        # then each layer's own templates with its fan-in, least common shape first
        shapes = [" ".join(map(str, p.shape)) for p in self.plans]
        for shape, _ in Counter(shapes).most_common()[::-1]:
            for p in (p for p, s in zip(self.plans, shapes) if s == shape):
                if p.numel * p.templates > n:
                    continue
                for t in flat[p.start:p.end].view(p.templates, *p.shape):
                    nn.init.kaiming_normal_(t)

    def _build_signatures(self) -> None:
        sigs: dict[tuple, list[int]] = defaultdict(list)
        self._single: list[int] = []
        for pos, p in enumerate(self.plans):
            if p.needs_resize and p.in_shape is None:
                self._single.append(pos)  # repeat / mask / wavg upsampling: one layer at a time
            else:
                sigs[(p.templates, p.template_numel, p.shape, p.in_shape)].append(pos)
        self._sigs: list[_Signature] = []
        for (k, tn, shape, in_shape), members in sigs.items():
            slots, rows, firsts = [], [], []
            for pos in members:
                p = self.plans[pos]
                if p.start % tn:
                    raise AssertionError(f"layer {p.index}: block start {p.start} is not a multiple of {tn}")
                first = p.start // tn
                firsts.append(first)
                slots.extend(range(first, first + k))
                rows.append(p.coef_row)
            has_coef = all(r >= 0 for r in rows)
            self._sigs.append(_Signature(members, k, tn, shape, in_shape, torch.tensor(slots, dtype=torch.long),
                                         tuple(firsts), torch.tensor(rows, dtype=torch.long) if has_coef else None))

    # -- generation -----------------------------------------------------------------------------
    def _coefs(self, k: int, rows: torch.Tensor | None, n_layers: int, device, dtype) -> torch.Tensor:
        if rows is None:  # K == 1 or 'avg': equal weights
            return torch.full((n_layers, k), 1.0 / k, device=device, dtype=dtype)
        rows = rows.to(device)
        if self.share_type == "wavg":
            c = self.coefficients[str(k)].table.index_select(0, rows)
        else:
            c = self.projections[str(k)](self.coefficients[str(k)].table.index_select(0, rows))
        if self.learn_groups:
            c = F.softmax(c, dim=1)
        return c

    def generate(self) -> list[torch.Tensor]:
        """Every layer's weight, in ``self.plans`` order."""
        flat = self.bank.flat
        out: list[torch.Tensor | None] = [None] * len(self.plans)
        for sig in self._sigs:
            tn, k, n_l = sig.template_numel, sig.k, len(sig.layers)
            if sig.in_shape is None:
                c = None if k == 1 and sig.coef_rows is None else \
                    self._coefs(k, sig.coef_rows, n_l, flat.device, flat.dtype)
                for pos, w in zip(sig.layers, _MixTemplates.apply(flat, c, sig.firsts, k, tn)):
                    out[pos] = w.view(sig.shape)
                continue
            table = _template_table(flat, tn)
            t = table.index_select(0, sig.slots.to(flat.device))  # (L*K, tn)
            # inter: bilinear upsampling of every template at once
            rest_in = math.prod(sig.in_shape[1:])
            rest_out = math.prod(sig.shape[1:])
            t = t.view(n_l, k, sig.in_shape[0], rest_in)
            t = F.interpolate(t, size=(sig.shape[0], rest_out), mode="bilinear", align_corners=False)
            t = t.reshape(n_l, k, -1)
            if k == 1 and sig.coef_rows is None:
                w = t[:, 0]
            else:
                c = self._coefs(k, sig.coef_rows, n_l, flat.device, flat.dtype)
                w = torch.bmm(c.unsqueeze(1).to(t.dtype), t).squeeze(1)
            for pos, wj in zip(sig.layers, w.unbind(0)):
                out[pos] = wj.view(sig.shape)
        for pos in self._single:
            p = self.plans[pos]
            x = flat[p.start:p.end]
            up = self.upsamplers[str(p.index)] if str(p.index) in self.upsamplers else None
            if up is None:
                raise RuntimeError(f"layer {p.index} is larger than its bank but has no upsampler")
            out[pos] = up(x, p.numel).view(p.shape)
        return out  # type: ignore[return-value]

    def reference_weight(self, pos: int) -> torch.Tensor:
        """One layer's weight computed the official way (slice, resize, mix); used by tests."""
        p = self.plans[pos]
        x = self.bank.flat[p.start:p.end]
        if p.needs_resize and p.in_shape is not None:
            x = x.reshape(-1)[: p.templates * math.prod(p.in_shape)]
            x = x.view(1, p.templates, p.in_shape[0], math.prod(p.in_shape[1:]))
            x = F.interpolate(x, size=[p.shape[0], math.prod(p.shape[1:])], mode="bilinear", align_corners=False)
        elif p.needs_resize:
            x = self.upsamplers[str(p.index)](x, p.numel)
        x = x.reshape(p.templates, *p.shape)
        if p.coef_row >= 0:
            c = self._coefs(p.templates, torch.tensor([p.coef_row]), 1, x.device, x.dtype)[0]
            return (x * c.view(-1, *([1] * len(p.shape)))).sum(0)
        return x.mean(0)
