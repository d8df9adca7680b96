"""Shape-dependent float rounding on one machine: the ``--float-perturb`` mode of the suite.

Why: float32 results of a matmul or convolution depend on the BLAS / oneDNN kernel the CPU gets, and
the kernel depends on the operands' *shapes* (and on the CPU: AMD EPYC and Intel Xeon pick different
ones). Two values computed through matmuls of different shapes may therefore agree bit for bit on the
developers' machines and differ by ~1e-8 on a user's (issue 29: SuperWeights' nested widths, 3 of 16
layers off by 3.0e-08 on an AMD EPYC). A test that compares such values with ``torch.equal`` passes
here and fails there.

What: with ``python -m pytest --float-perturb`` (or ``NPAS_FLOAT_PERTURB=1``), every float matmul,
``F.linear`` and ungrouped ``F.conv2d`` in the test process sums its reduction dimension in two parts,
split at a point chosen from the *other* dimensions of the operands. So:

- the same operation on the same shapes gives bit-identical results, run after run (a resume, a
  replay, a cached forward keep comparing exactly, as they do on any CPU);
- the same values reached through operations of different shapes (a narrow member's weight against a
  slice of a wide member's, a batch of 1 against row 0 of a batch of 128) differ in their last bits,
  as they may on another CPU; a test that needs them equal must say with which tolerance.

Only the test process is perturbed (not the subprocesses some tests start). The mode is a test aid,
not a model of any particular CPU: it makes cross-shape rounding visible, it does not bound it.
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F

ENV = "NPAS_FLOAT_PERTURB"

_orig: dict[str, object] = {}


def _split(k: int, *dims: int) -> int:
    """A split point in 1..k-1 that depends on the operands' other dimensions (deterministic)."""
    h = 0
    for d in dims:
        h = (h * 1_000_003 + int(d) + 7) % 2_147_483_647
    return 1 + h % (k - 1)


def _perturbable(*ts: torch.Tensor) -> bool:
    return all(isinstance(t, torch.Tensor) and t.is_floating_point() for t in ts)


def _matmul(a, b, *args, **kwargs):  # torch.matmul / Tensor.__matmul__ / Tensor.matmul
    mm = _orig["matmul"]
    if args or kwargs or not _perturbable(a, b) or a.dim() < 2 or b.dim() < 2 or a.shape[-1] < 2:
        return mm(a, b, *args, **kwargs)
    k = a.shape[-1]
    s = _split(k, *a.shape[:-1], b.shape[-1])
    return mm(a[..., :s], b[..., :s, :]) + mm(a[..., s:], b[..., s:, :])


def _mm(a, b, *args, **kwargs):  # torch.mm / Tensor.mm
    mm = _orig["mm"]
    if args or kwargs or not _perturbable(a, b) or a.shape[-1] < 2:
        return mm(a, b, *args, **kwargs)
    s = _split(a.shape[1], a.shape[0], b.shape[1])
    return mm(a[:, :s], b[:s]) + mm(a[:, s:], b[s:])


def _bmm(a, b, *args, **kwargs):  # torch.bmm / Tensor.bmm
    bmm = _orig["bmm"]
    if args or kwargs or not _perturbable(a, b) or a.shape[-1] < 2:
        return bmm(a, b, *args, **kwargs)
    s = _split(a.shape[2], a.shape[0], a.shape[1], b.shape[2])
    return bmm(a[:, :, :s], b[:, :s]) + bmm(a[:, :, s:], b[:, s:])


def _linear(x, weight, bias=None):
    lin = _orig["linear"]
    if not _perturbable(x, weight) or x.shape[-1] < 2:
        return lin(x, weight, bias)
    s = _split(x.shape[-1], math.prod(x.shape[:-1]), weight.shape[0])
    out = lin(x[..., :s], weight[:, :s]) + lin(x[..., s:], weight[:, s:])
    return out if bias is None else out + bias


def _conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    conv = _orig["conv2d"]
    if groups != 1 or not _perturbable(x, weight) or weight.shape[1] < 2 or isinstance(padding, str):
        return conv(x, weight, bias, stride, padding, dilation, groups)
    s = _split(weight.shape[1], *x.shape[:1], *x.shape[2:], weight.shape[0])
    out = (conv(x[:, :s], weight[:, :s], None, stride, padding, dilation, 1)
           + conv(x[:, s:], weight[:, s:], None, stride, padding, dilation, 1))
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def enabled() -> bool:
    return bool(_orig)


def install() -> None:
    """Route the float reductions of this process through the split forms above (idempotent)."""
    if _orig:
        return
    _orig.update(matmul=torch.matmul, mm=torch.mm, bmm=torch.bmm, linear=F.linear, conv2d=F.conv2d,
                 t_matmul=torch.Tensor.__matmul__, t_mm=torch.Tensor.mm, t_bmm=torch.Tensor.bmm,
                 t_matmul_m=torch.Tensor.matmul)
    torch.matmul = _matmul
    torch.mm = _mm
    torch.bmm = _bmm
    F.linear = _linear
    F.conv2d = _conv2d
    torch.Tensor.__matmul__ = _matmul
    torch.Tensor.matmul = _matmul
    torch.Tensor.mm = _mm
    torch.Tensor.bmm = _bmm


def uninstall() -> None:
    if not _orig:
        return
    torch.matmul, torch.mm, torch.bmm = _orig["matmul"], _orig["mm"], _orig["bmm"]
    F.linear, F.conv2d = _orig["linear"], _orig["conv2d"]
    torch.Tensor.__matmul__ = _orig["t_matmul"]
    torch.Tensor.matmul = _orig["t_matmul_m"]
    torch.Tensor.mm = _orig["t_mm"]
    torch.Tensor.bmm = _orig["t_bmm"]
    _orig.clear()


def requested(config_flag: bool) -> bool:
    return config_flag or os.environ.get(ENV, "") not in ("", "0")
