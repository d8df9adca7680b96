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
from dataclasses import dataclass
import hashlib
import json
from typing import Any

from .budget import Budget
from .config import Config, build_config
from .contract import BuildRequest
from .errors import BudgetError, ConfigError, NPASError
from .factory import MAX_BUDGET_RATIO, check_budget_scale, make_request, resolve_budget, unshared_size

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


def _num_classes(cfg: Config) -> int | None:
    return cfg.data.synthetic_classes if cfg.data.name == "synthetic" else None


@dataclass(frozen=True)
class Experiment:
    """A config resolved once (``resolve``): its canonical config, its run id and its budget.

    Code downstream of the command line and the grid's manifest takes this type, never a raw ``Config``, so
    nothing resolves a config twice: the trainer, the shared phases and the grid's expansion read the id and
    the budget from here.
    """

    config: Config
    run_id: str
    budget: Budget | None

    def request(self, with_budget: bool = True, num_classes: int | None = None,
                image_size: int | None = None) -> BuildRequest:
        """The ``BuildRequest``: from the config alone (a grid plan's preview, a phase list), or with the loaded
        data's classes and image size (a run; the same numbers: a test checks data sets against ``dataset_info``)."""
        return _request(self.config, self.budget if with_budget else None, num_classes, image_size)

    def with_run(self, **fields: Any) -> "Experiment":
        """The same experiment with other ``run`` settings (its folder, name, progress): the ``run`` section is not
        part of the id, so nothing is resolved again."""
        return dataclasses.replace(self, config=dataclasses.replace(
            self.config, run=dataclasses.replace(self.config.run, **fields)))


def resolve(cfg: Config | Experiment) -> Experiment:
    """``cfg`` resolved, checked and identified, once (an ``Experiment`` is returned as it is); raises an
    NPASError naming the field."""
    if isinstance(cfg, Experiment):
        return cfg
    resolved = resolve_config(cfg)
    return Experiment(resolved, digest(identity_dict(resolved)), budget_of(resolved))


def resolve_config(cfg: Config) -> Config:
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


def _request(cfg: Config, budget: Budget | None, num_classes: int | None = None,
             image_size: int | None = None) -> BuildRequest:
    synthetic = cfg.data.name == "synthetic"
    return make_request(cfg.model.arch, cfg.data.name, budget,
                        num_classes=num_classes if num_classes is not None else _num_classes(cfg),
                        image_size=image_size if image_size is not None else (
                            cfg.data.synthetic_size if synthetic else None))


def config_request(cfg: Config | Experiment, with_budget: bool = True) -> BuildRequest:
    """The ``BuildRequest`` of a config that is resolved already (a grid manifest's), from the config alone: it
    is not resolved again (``Experiment.request`` for an Experiment)."""
    if isinstance(cfg, Experiment):
        return cfg.request(with_budget)
    return _request(cfg, budget_of(cfg) if with_budget else None)


def budget_of(cfg: Config) -> Budget | None:
    """The ``Budget`` of a resolved config."""
    return Budget.parse(cfg.model.budget, cfg.model.budget_mode)


def run_id(cfg: Config | Experiment) -> str:
    """The id of ``cfg``'s experiment: a hash of the resolved identity, 16 hex digits (``Experiment.run_id``)."""
    return resolve(cfg).run_id


__all__ = ["Experiment", "IDENTITY_ADDED", "IDENTITY_EXCLUDED", "MAX_BUDGET_RATIO", "check_budget_scale", "identity_dict",
           "digest", "resolve", "resolve_config", "resolve_budget", "run_id", "budget_of", "config_request",
           "unshared_size"]
