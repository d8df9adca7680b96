"""Tolerances for values that are equal in exact arithmetic but reached by float operations of different shapes.

A dot product of ``n`` float terms, summed in *any* order, is within ``gamma(n) * sum |a_i b_i|`` of the exact
value (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., Sec. 3.1, eq. 3.5), with
``gamma(n) = n u / (1 - n u)`` and ``u`` the unit roundoff (2**-24 in float32). Two kernels that sum the same
terms in different orders (a BLAS picks its kernel by the operands' shapes and by the CPU) therefore differ by
at most twice that. Tests that compare such values use this bound, element by element, instead of
``torch.equal``: it is tight enough to catch a wrong value (a real error is of the order of the values) and
holds on every CPU.
"""

from __future__ import annotations

import torch


def unit_roundoff(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps / 2


def gamma(n: int, dtype: torch.dtype = torch.float32) -> float:
    nu = n * unit_roundoff(dtype)
    if nu >= 1:
        raise ValueError(f"gamma({n}) is unbounded in {dtype}")
    return nu / (1 - nu)


def assert_equal_to_rounding(a: torch.Tensor, b: torch.Tensor, abs_terms: torch.Tensor, n: int, what: str = "") -> None:
    """``a`` and ``b``: two computations of the same dot products of ``n`` terms; ``abs_terms``: the same dot
    products of the terms' absolute values (``|x| @ |y|``). Asserts ``|a - b| <= 2 gamma(n) |x| @ |y|``
    elementwise (plus one float32 spacing at zero, for values that round to 0 on one side)."""
    assert a.shape == b.shape == abs_terms.shape, f"{what}: shapes {tuple(a.shape)}, {tuple(b.shape)}, {tuple(abs_terms.shape)}"
    bound = 2 * gamma(n, a.dtype) * abs_terms + torch.finfo(a.dtype).tiny
    diff = (a.double() - b.double()).abs()
    worst = float((diff - bound.double()).max())
    assert worst <= 0, (f"{what}: differs by up to {float(diff.max()):.3g}, beyond the float rounding bound "
                        f"2*gamma({n})*|x|@|y| (exceeded by {worst:.3g})")
