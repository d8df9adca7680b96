"""Run identity: resolve a config into the one canonical form of its experiment, then hash it.

The same experiment can be written many ways: ``--opt bank_size=8``, ``bank_size = 8`` in TOML or
nothing at all (the default); a budget of ``100k``, ``100000`` or ``"10%"`` of the unshared network;
the data in one folder or another. ``resolve`` turns every spelling into one ``Config``:

- the method is looked up in the registry and its options are typed, with every default filled in;
- the budget is parsed to an integer (percentages of the unshared network's unique parameters are
  turned into that integer) and its mode is checked against the method's ``budget_modes``;
- the architecture and the data set are checked against their registries.

``run_id`` hashes only what can change results (``IDENTITY_EXCLUDED`` lists what cannot: paths,
worker and thread counts, the device choice, progress and the whole ``run`` section), so moving
the data or running with more threads keeps the id, and ``run.resume=auto`` keeps working. Every
check here runs before a run writes anything.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from typing import Any

from .budget import Budget, is_no_budget, parse_count
from .config import Config, build_config
from .errors import BudgetError, ConfigError, NPASError

# Fields that cannot change a run's results, by section. ``run`` is excluded as a whole.
IDENTITY_EXCLUDED: dict[str, tuple[str, ...]] = {
    "data": ("root", "download", "num_workers", "os_cache", "beton_dir"),
    "train": ("threads", "device", "eval_batch_size"),
}


# Fields added after run ids were first published, by section: left out of the identity while they hold their
# default (which is what every earlier run used), so adding a field never changes an existing run's id.
IDENTITY_ADDED: dict[str, tuple[str, ...]] = {
    "optim": ("name", "betas", "eps"),
    "data": ("auto_augment", "mixup_alpha", "cutmix_alpha", "mix_prob"),
}


@functools.lru_cache(maxsize=1)
def _added_defaults() -> dict[str, dict[str, Any]]:
    d = Config().to_dict()
    return {section: {name: d[section][name] for name in names} for section, names in IDENTITY_ADDED.items()}


def identity_dict(cfg: Config) -> dict[str, Any]:
    """The part of a (resolved) config that determines results."""
    d = cfg.to_dict()
    d.pop("run")
    for section, names in IDENTITY_EXCLUDED.items():
        for name in names:
            d[section].pop(name, None)
    for section, defaults in _added_defaults().items():
        for name, default in defaults.items():
            if name in d[section] and d[section][name] == default:
                del d[section][name]
    return d


def digest(obj: Any, length: int = 16) -> str:
    """A stable short hash of a JSON-able object (sorted keys, no whitespace)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


# A budget more than this many times the unshared network(s) it stands for is refused: no NPAS experiment
# needs it (parameter upsampling studies go a few times over), and methods that fill their budget
# (SSN's bank) would try to allocate it -- 1e12 parameters are 4 TB.
MAX_BUDGET_RATIO = 64


@functools.lru_cache(maxsize=64)
def unshared_size(arch: str, dataset: str, num_classes: int | None = None) -> int:
    """Unique trainable parameters of the plain network (the reference of ``"10%"`` budgets)."""
    from .factory import create_model

    return create_model("unshared", arch, dataset, None, {}, num_classes=num_classes).report(flops=False).total


def resolve_budget(value: Any, mode: str, arch: str, dataset: str, num_classes: int | None = None) -> int | None:
    """``"100k"`` -> 100000; ``"10%"`` -> 10% of the unshared network's size; None/"none"/"full" -> None."""
    if is_no_budget(value, "model.budget"):
        return None
    if isinstance(value, str) and value.strip().endswith("%"):
        text = value.strip()[:-1]
        try:
            frac = float(text)
        except ValueError:
            raise BudgetError(f"model.budget: {value!r} is not a percentage; write e.g. \"10%\" or \"2.5%\".") from None
        if not frac > 0:
            raise BudgetError(f"model.budget: a percentage budget must be positive, got {value!r}.")
        if mode != "total":
            raise BudgetError(f"model.budget: a percentage ({value!r}) is a share of the unshared network's unique "
                              f"parameters, i.e. budget_mode 'total', not {mode!r}. Give an absolute count instead.")
        return max(1, int(round(unshared_size(arch, dataset, num_classes) * frac / 100.0)))
    return parse_count(value, "model.budget")


def check_budget_scale(method, budget: int, arch: str, dataset: str, num_classes: int | None = None) -> None:
    """Refuse a budget beyond ``MAX_BUDGET_RATIO`` times the unshared size of the networks ``method``
    stands in for (``Method.reference_archs``), before anything is built: a typo (1e12 for 1e6) must be a
    one-line error, not an allocation of terabytes."""
    archs = method.reference_archs(arch)
    reference = sum(unshared_size(a, dataset, num_classes) for a in archs)
    if budget > MAX_BUDGET_RATIO * reference:
        what = archs[0] if len(archs) == 1 else f"networks of its {len(archs)} members ({', '.join(archs)})"
        raise BudgetError(f"model.budget: {budget:,} parameters is {budget / reference:,.0f}x the unshared {what} "
                          f"({reference:,}); budgets above {MAX_BUDGET_RATIO}x are refused. Check the number "
                          "(e.g. 1.5M, 500k, \"10%\") or use \"none\" for the method's natural size.")


def _num_classes(cfg: Config) -> int | None:
    return cfg.data.synthetic_classes if cfg.data.name == "synthetic" else None


def resolve(cfg: Config) -> Config:
    """The canonical config of ``cfg``'s experiment (idempotent); raises an NPASError naming the field."""
    from .data.info import dataset_info
    from .models.registry import get_arch
    from .plugins import get_method_class, parse_method_options
    from .options import to_dict

    # every field through its declared type (a default tuple of ints and the same values read back from
    # JSON as floats must hash alike)
    cfg = build_config(cfg.to_dict())
    cls = get_method_class(cfg.method.name)  # RegistryError names the known methods
    options = to_dict(parse_method_options(cfg.method.name, cfg.method.options))
    try:
        get_arch(cfg.model.arch)
    except NPASError as exc:
        raise ConfigError(f"model.arch: {exc}") from None
    try:
        dataset_info(cfg.data.name)
    except NPASError as exc:
        raise ConfigError(f"data.name: {exc}") from None
    mode = cfg.model.budget_mode
    if mode not in cls.budget_modes:
        raise BudgetError(f"model.budget_mode: method {cfg.method.name!r} supports "
                          f"{', '.join(cls.budget_modes)}, not {mode!r}.")
    budget = resolve_budget(cfg.model.budget, mode, cfg.model.arch, cfg.data.name, _num_classes(cfg))
    if budget is not None:
        check_budget_scale(cls(parse_method_options(cfg.method.name, options)), budget, cfg.model.arch,
                           cfg.data.name, _num_classes(cfg))
    if budget is None:
        mode = "total"  # no budget: the mode means nothing, so it must not split one experiment into two ids
    return dataclasses.replace(
        cfg,
        method=dataclasses.replace(cfg.method, options=options),
        model=dataclasses.replace(cfg.model, budget=budget, budget_mode=mode),
    )


def config_request(cfg: Config, with_budget: bool = True):
    """The ``BuildRequest`` of a resolved config, from the config alone (no data read): what a grid
    plan builds to preview a model and to ask a method for its phases. A run builds its request from
    the loaded data instead (the same numbers: a test checks the data sets against ``dataset_info``)."""
    from .factory import make_request

    image = cfg.data.synthetic_size if cfg.data.name == "synthetic" else None
    return make_request(cfg.model.arch, cfg.data.name, budget_of(cfg) if with_budget else None,
                        num_classes=_num_classes(cfg), image_size=image)


def budget_of(cfg: Config) -> Budget | None:
    """The ``Budget`` of a resolved config."""
    return Budget.parse(cfg.model.budget, cfg.model.budget_mode)


def run_id(cfg: Config) -> str:
    """The id of ``cfg``'s experiment: a hash of the resolved identity, 16 hex digits."""
    return digest(identity_dict(resolve(cfg)))


__all__ = ["IDENTITY_ADDED", "IDENTITY_EXCLUDED", "MAX_BUDGET_RATIO", "check_budget_scale", "identity_dict", "digest", "resolve", "resolve_budget", "run_id", "budget_of",
           "config_request", "unshared_size"]
