"""Parameter accounting: unique storage, roles, breakdown, budgets, FLOPs."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from npasbench import Budget, BudgetError
from npasbench.accounting import ROLES, count_flops, param_report, unique_storage_numel
from npasbench.budget import parse_count


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(8, 8, bias=False)
        self.b = nn.Linear(8, 8, bias=False)
        self.b.weight = self.a.weight  # same Parameter in two layers
        self.bn = nn.BatchNorm1d(8)
        self.mystery = nn.Parameter(torch.zeros(3))


def test_shared_parameter_counts_once_and_roles():
    rep = param_report(Tied(), None)
    assert rep.total == 64 + 16 + 3
    assert rep.breakdown == {"bank": 0, "coefficients": 0, "generators": 0, "weights": 64, "norm_bias": 16, "embedding": 0, "head": 0, "other": 3}
    assert set(rep.breakdown) == set(ROLES)


def test_views_of_one_storage_count_once():
    base = torch.zeros(100)
    assert unique_storage_numel([base[:60], base[40:], base[10:20]]) == 100
    assert unique_storage_numel([base[:10], base[50:60]]) == 20
    assert unique_storage_numel([torch.zeros(5), torch.zeros(5)]) == 10


def test_frozen_parameters_are_not_trainable_budget():
    m = Tied()
    m.mystery.requires_grad_(False)
    rep = param_report(m, None)
    assert rep.total == 80 and rep.frozen == 3


def test_flops_of_a_known_conv():
    class One(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c = nn.Conv2d(3, 4, 3, padding=1, bias=False)

        def forward(self, x):
            return self.c(x)

    f = count_flops(One(), (3, 8, 8))
    assert f["per_member"] == [2 * 3 * 4 * 9 * 8 * 8]
    assert f["macs_per_member"] == [3 * 4 * 9 * 8 * 8]


def test_undeclared_role_is_rejected():
    class Bad(nn.Module):
        npas_roles = {"w": "banks"}

        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.zeros(2))

    with pytest.raises(ValueError, match="not one of"):
        param_report(Bad(), None)


@pytest.mark.parametrize("text,value", [("1000000", 1_000_000), ("1.5M", 1_500_000), ("500k", 500_000),
                                        ("1e6", 1_000_000), ("36_536_884", 36_536_884), (2500, 2500), ("2,000", 2000)])
def test_budget_parsing(text, value):
    assert parse_count(text) == value
    assert Budget.parse(text).params == value


@pytest.mark.parametrize("bad", ["lots", "-5", "0", "1.5X", True])
def test_bad_budget_is_clear(bad):
    with pytest.raises(BudgetError, match="budget"):
        Budget.parse(bad)


def test_no_budget():
    assert Budget.parse(None) is None and Budget.parse("none") is None


def test_largest_fitting_is_the_one_budget_search():
    """The bisection reduced, SSN and SuperWeights size themselves with: the boundary of a monotone test,
    and on a non-monotone one still a value that fits (never a probe that failed)."""
    from npasbench.budget import largest_fitting

    assert largest_fitting(-1, 99, lambda x: x <= 41) == 41
    assert largest_fitting(-1, 99, lambda x: False) == -1
    assert largest_fitting(5, 5, lambda x: False) == 5
    assert largest_fitting(0, 10**9, lambda x: x * x <= 10**12) == 10**6
    probes = []
    bumpy = lambda x: probes.append(x) or (x <= 30 or 60 <= x <= 70)  # noqa: E731
    got = largest_fitting(0, 100, bumpy)
    assert bumpy(got) and len(probes) < 12
