"""The method contract: what every NPAS method and baseline implements.

A *method* turns a request -- architecture(s), number of classes, parameter budget, typed options,
artifacts of earlier phases -- into an ``NPASModel``. The common trainer does everything else. The
contract covers:

- ``build``: the model. Weight layers get their weights from providers the method attaches, so a
  method never copies an architecture. Multi-member models (ensembles) return every member's logits.
- ``phases``: optional phases run before training (e.g. a search phase). Each returns an artifact
  (a JSON-able dict) that is saved in the run folder and handed to ``build`` under its phase name.
- ``extra_state`` / ``load_extra_state``: method state outside the module's ``state_dict`` that must
  survive checkpoints (e.g. learned clusters that change the model during training). On resume it is
  restored *before* the weights, so a model whose structure changed can be rebuilt first.
- hooks: ``on_epoch_start``, ``on_epoch_end`` (may change the parameter set: return True and the
  trainer rebuilds its optimizer, keeping the state of parameters that still exist) and
  ``after_backward`` (sees gradients; called only when a method overrides it).
- ``no_weight_decay_roles``: parameters exempt from weight decay, by *role* (see
  ``accounting.ROLES``), never by name matching.
- ``budget_modes``: ``total`` (suite-wide) plus any official knob the method offers.
- ``phase_inputs`` / ``preview_artifacts``: optional; let a grid share a phase whose output does not
  depend on the whole run (SSN's group search ignores the budget), and preview a model's size.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence, TypeVar

import torch
import torch.nn as nn

from .budget import Budget
from .errors import BudgetError, ConfigError, RegistryError
from .models.layers import WeightedLayer, weight_layers

T = TypeVar("T")


@dataclass(frozen=True)
class MethodOptions:
    """Base class of every method's typed options (subclass it as a frozen dataclass)."""


@dataclass(frozen=True)
class BuildRequest:
    arch: str
    num_classes: int
    budget: Budget | None = None
    dataset: str = "synthetic"
    image_size: int = 32
    artifacts: dict[str, Any] = field(default_factory=dict)  # phase name -> artifact


class RunContext(ABC):
    """What a method's phases and epoch hooks get from the run (the trainer provides it; ``method.context``
    during training): the run's config, data, device and folder, plus the three services a method must not
    build itself -- batches (``loader``), training (``fit``, through the run's one training step) and
    agreement across DDP ranks (``agree``)."""

    cfg: Any  # npasbench.config.Config
    data: Any  # npasbench.data.DataBundle
    device: torch.device
    run_dir: Path
    request: BuildRequest
    run_id: str
    progress: bool

    @abstractmethod
    def loader(self, split: str = "train", *, batch_size: int | None = None, seed: int | None = None,
               drop_last: bool = True) -> Any:
        """A loader of the run's data on its device (``epoch(e)`` yields (images, labels) batches)."""

    @abstractmethod
    def fit(self, model: "NPASModel", epochs: int, *, lr: float | None = None, milestones: tuple[float, ...] = (),
            gammas: tuple[float, ...] = (), batch_size: int | None = None, max_steps_per_epoch: int | None = None,
            no_decay_roles: frozenset[str] = frozenset(), seed: int | None = None, desc: str = "phase") -> dict[str, float]:
        """Train ``model`` for ``epochs`` (a step schedule) with the run's optimizer and training step;
        returns {"loss": the last epoch's mean training loss}."""

    @abstractmethod
    def agree(self, value: T) -> T:
        """Rank 0's ``value`` on every rank (a decision all ranks must share); the value itself outside DDP.
        A collective: call it on every rank, i.e. from epoch hooks (phases run on rank 0 alone, their artifact
        is what the ranks share)."""


@dataclass(frozen=True)
class Phase:
    """A step before training; ``run`` returns a JSON-able artifact dict."""

    name: str
    description: str
    run: Callable[[RunContext], dict]
    # what the phase trains, for compute estimates (``npas grid plan``): epochs over the run's training data,
    # each capped at ``max_steps_per_epoch`` steps when > 0; 0 epochs = it trains nothing worth counting
    epochs: float = 0.0
    max_steps_per_epoch: int = 0


class NPASModel(nn.Module):
    """One or more member networks plus the storage they share.

    ``forward`` returns logits of shape (members, batch, classes), also for a single member, so the
    trainer treats plain networks and ensembles alike. ``shared`` holds storage used by several
    layers or members (banks); it appears once in ``parameters()`` and ``state_dict()``.
    """

    def __init__(self, members: Sequence[nn.Module], member_names: Sequence[str] | None = None,
                 shared: dict[str, nn.Module] | None = None, built: object = None) -> None:
        super().__init__()
        if not members:
            raise ValueError("an NPASModel needs at least one member network")
        self.members = nn.ModuleList(members)
        self.member_names = list(member_names or [f"member{i}" for i in range(len(members))])
        self.shared = nn.ModuleDict(shared or {})
        self._built: object = built

    # -- what the method decided when it built the model (its plan, its choices) --------------------
    def built(self, kind: type[T]) -> T:
        """The facts the method decided at build time (``NPASModel(..., built=...)``: one object of the method's
        own type, e.g. its plan), read back by its hooks, ``extra_state`` and ``record_info``; checked to be a
        ``kind`` (a method reads only its own). Mutable objects may change in place (SuperWeights' row map)."""
        if not isinstance(self._built, kind):
            raise TypeError(f"this model's built facts are {type(self._built).__name__}, not {kind.__name__}: "
                            "built by another method, or its build passed no built=")
        return self._built

    @property
    def num_members(self) -> int:
        return len(self.members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.members) == 1:
            return self.members[0](x).unsqueeze(0)
        return torch.stack([m(x) for m in self.members])

    def forward_member(self, index: int, x: torch.Tensor) -> torch.Tensor:
        return self.members[index](x)

    def weight_layers(self, member: int | None = None) -> list[WeightedLayer]:
        """Weight layers in reference order (per member, stem first, classifier last)."""
        members = self.members if member is None else [self.members[member]]
        return [layer for m in members for layer in weight_layers(m)]


MAX_MEMBERS = 8  # members of one model: anytime evaluation scores every non-empty subset (2**M - 1 of them)


def parse_members(text: str, what: str, least: int = 1, field: str = "method.options.members") -> list[str]:
    """A comma-separated member list (``members`` option of multi-member methods): every name a registered
    architecture, between ``least`` and ``MAX_MEMBERS`` of them when any is given (``what``: who needs
    them, for the message). Empty text -> []: the method's default members."""
    from .models.registry import get_arch

    archs = [a.strip() for a in text.split(",") if a.strip()]
    for a in archs:
        try:
            get_arch(a)
        except RegistryError as exc:
            raise ConfigError(f"{field}: {a!r} is not an architecture ({exc}).") from None
    if archs and not least <= len(archs) <= MAX_MEMBERS:
        raise ConfigError(f"{field}: {what} needs {least} to {MAX_MEMBERS} members (anytime evaluation scores every "
                          f"subset), got {len(archs)}.")
    return archs


def check_one_domain(archs: Sequence[str], field: str = "method.options.members") -> None:
    """Members of one model see the same inputs: their architectures must share an input domain."""
    from .models.registry import get_arch

    domains = {get_arch(a).domain for a in archs}
    if len(domains) > 1:
        raise ConfigError(f"{field}: members mix input domains {sorted(domains)}; use architectures made for one "
                          "input size.")


def member_names(archs: Sequence[str]) -> list[str]:
    """Arch names as member names; repeated names get ``#1``, ``#2``... so anytime rows stay distinct."""
    counts: dict[str, int] = {}
    for a in archs:
        counts[a] = counts.get(a, 0) + 1
    seen: dict[str, int] = {}
    out = []
    for a in archs:
        if counts[a] == 1:
            out.append(a)
        else:
            seen[a] = seen.get(a, 0) + 1
            out.append(f"{a}#{seen[a]}")
    return out


class Method(ABC):
    """Base class of every method and baseline. Subclass, set the class attributes, register."""

    name: ClassVar[str] = ""
    Options: ClassVar[type[MethodOptions]] = MethodOptions
    summary: ClassVar[str] = ""
    reference: ClassVar[str] = ""
    budget_modes: ClassVar[tuple[str, ...]] = ("total",)
    # options `npas demo` uses so the method's demo run takes seconds (e.g. a shortened search phase)
    demo_options: ClassVar[dict[str, Any]] = {}

    def __init__(self, options: MethodOptions | None = None) -> None:
        self.options = options if options is not None else self.Options()
        if not isinstance(self.options, self.Options):
            raise TypeError(f"{type(self).__name__} expects options of type {self.Options.__name__}")
        # Set by the trainer once the phases have run: the run's context (config, data, device, loaders,
        # agreement), for epoch hooks that must read data (e.g. SuperWeights' coefficient unsharing). None outside it.
        self.context: RunContext | None = None

    # -- required -------------------------------------------------------------------------
    @abstractmethod
    def build(self, request: BuildRequest) -> NPASModel:
        """Build the model for the request. Raise ``BudgetError`` for an impossible budget."""

    # -- optional -------------------------------------------------------------------------
    def phases(self, request: BuildRequest) -> list[Phase]:
        return []

    def phase_inputs(self, phase: str, experiment: dict[str, Any]) -> dict[str, Any] | None:
        """What the artifact of ``phase`` depends on, given the run's resolved identity
        (``experiment.identity_dict``: method, model, data, optim, train sections).

        Return the subset the phase reads (e.g. without the budget, when the phase never sees it) to let
        a grid run the phase once and hand its artifact to every run with the same inputs; the artifact
        is stored under a hash of them. ``None`` (the default) means the phase depends on the whole run
        and runs inside it.
        """
        return None

    def preview_artifacts(self, request: BuildRequest) -> dict[str, Any] | None:
        """Stand-in phase artifacts that let ``build`` run without the phases, so that a grid plan can
        report the model's size and check its budget before anything trains. ``None``: not possible."""
        return None

    def reference_archs(self, arch: str) -> list[str]:
        """The plain networks this method's model stands in for (an ensemble: each member), given the
        run's ``model.arch``. A budget is sanity-checked against their summed unshared size
        (``experiment.MAX_BUDGET_RATIO``) before anything is built or trained."""
        return [arch]

    def no_weight_decay_roles(self) -> frozenset[str]:
        return frozenset()

    def extra_state(self, model: NPASModel) -> dict[str, Any]:
        return {}

    def load_extra_state(self, model: NPASModel, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"method {self.name!r} got extra state {sorted(state)} but defines no load_extra_state")

    def on_epoch_start(self, model: NPASModel, epoch: int) -> bool:
        return False

    def on_epoch_end(self, model: NPASModel, epoch: int, metrics: dict[str, float]) -> bool:
        return False

    def after_backward(self, model: NPASModel, step: int) -> None:  # pragma: no cover - default unused
        return None

    def record_info(self, model: NPASModel) -> dict[str, Any]:
        """JSON-able facts about the built model for the result record (``method_info``): e.g. the
        architecture a reduced baseline settled on, or SSN's groups and bank sizes."""
        return {}

    # -- helpers --------------------------------------------------------------------------
    @classmethod
    def wants_after_backward(cls) -> bool:
        return cls.after_backward is not Method.after_backward

    def check_budget_mode(self, budget: Budget | None) -> None:
        if budget is not None and budget.mode not in self.budget_modes:
            raise BudgetError(
                f"budget_mode: method {self.name!r} supports {', '.join(self.budget_modes)}, not {budget.mode!r}."
            )

    def options_dict(self) -> dict[str, Any]:
        from .options import to_dict

        return to_dict(self.options)
