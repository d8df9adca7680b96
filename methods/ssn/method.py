"""Shapeshifter Networks (SSN): Plummer et al., "Neural Parameter Allocation Search", ICLR 2022.

Layers are mapped to parameter groups; each group owns one flat bank; every forward, a layer's
weight is generated from K templates cut from its group's bank (mixed by learned per-layer
coefficients ``wavg``, by coefficients projected from a per-layer embedding ``emb``, or averaged
``avg``), upsampled when the layer is larger than its bank. Groups come from a rule (single, by
type, by shape, manual, random) or are *learned* in a short search phase (a one-group SSN is
trained briefly, then its per-layer coefficients or embeddings are clustered with seeded k-means).

Budgets: ``max_params`` mode is the official knob (the total size of the banks, split across
groups); ``total`` mode (suite default) solves for the ``max_params`` whose total unique trainable
parameters (banks, coefficients, generators, norms, singleton layers) is the largest that fits.
No budget means the official ``max_params 0``: each bank as large as its largest layer.

Deliberate differences from the official code, each documented on its option:
- ``emb`` works (the official ``set_layer_coeff`` crashes with a NameError for it);
- learned groups run on any device in one command (official: only with ``--dist``, then restart);
- ``avg`` works with upsampling (official: crashes when a layer is larger than its bank);
- on architectures the official code never had (transformers), grouped *body* linear layers keep the bias
  the architecture gives them; only the classifier drops it, as the official ``SLinear``;
- the bank tail the official init leaves uninitialised (the last ``n % 9`` entries, random memory)
  is zero here by default (``bank_tail_init``), deterministic for a seed;
- opt-in fixes: ``spread_blocks`` (use the whole bank when blocks would all restart at 0),
  ``singleton_bias=false`` (singleton layers without the bias the official ``nn.Conv2d`` adds
  outside the budget split).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch.nn as nn

from npasbench.models.layers import Conv, Linear
from npasbench.sdk import (BudgetError, BuildRequest, ConfigError, LayerSpec, Method, MethodOptions, NPASModel,
                           OwnedWeight, Phase, create_backbone, largest_fitting, register_method)

from .generator import SSNGroup
from .groups import auto_groups, manual_groups, normalise, random_groups
from .network import GeneratedWeight, SSNNet
from .plan import SSNPlan, make_plan


def _h(text: str) -> dict:
    return {"help": text}


@dataclass(frozen=True)
class SSNOptions(MethodOptions):
    share_type: Literal["wavg", "emb", "avg"] = field(default="wavg", metadata=_h(
        "how a layer mixes its K templates: learned coefficients, coefficients from a learned embedding, mean"))
    upsample_type: Literal["inter", "repeat", "mask", "wavg"] = field(default="inter", metadata=_h(
        "how a layer larger than its bank is filled (official default inter)"))
    upsample_window: int = field(default=1, metadata=_h("3x3 windows per learned mask/wavg upsampling unit"))
    bank_size: int = field(default=8, metadata=_h("maximum templates per layer (official --bank_size)"))
    param_groups: int = field(default=1, metadata=_h(
        "1: one group; 0: a group per layer type; -1: a group per layer shape; >1: that many groups by group_type"))
    group_type: Literal["learned", "manual", "random"] = field(default="learned", metadata=_h(
        "how param_groups > 1 groups are formed (manual: the official rule, which fixes its own count)"))
    groups: tuple[int, ...] = field(default=(), metadata=_h(
        "explicit group id per weight layer (official 'reload'); overrides param_groups"))
    group_seed: int = field(default=0, metadata=_h("seed of random groups and of the search's k-means"))
    emb_size: int = field(default=24, metadata=_h("embedding size of share_type emb"))
    search_max_params: int = field(default=5_000_000, metadata=_h("bank of the one-group search model"))
    search_share_type: Literal["wavg", "emb"] = field(default="wavg", metadata=_h(
        "search model's sharing: k-means over its softmax coefficients (wavg: the one the official code runs; its "
        "default flag emb crashes in set_layer_coeff) or embeddings (emb)"))
    search_epochs: int = field(default=15, metadata=_h("search phase epochs"))
    search_milestones: tuple[int, ...] = field(default=(8, 13), metadata=_h("search LR milestones (epochs)"))
    search_gammas: tuple[float, ...] = field(default=(0.1, 0.1), metadata=_h("search LR factors"))
    search_steps_per_epoch: int = field(default=0, metadata=_h("cap on search steps per epoch; 0 = run's setting"))
    bank_tail_init: Literal["zeros", "kaiming"] = field(default="zeros", metadata=_h(
        "the last bank%9 entries, which the official init leaves uninitialised"))
    spread_blocks: bool = field(default=False, metadata=_h(
        "fix: spread same-size blocks over the whole bank instead of restarting at 0 (no dead regions)"))
    singleton_bias: bool = field(default=True, metadata=_h(
        "singleton groups are plain layers with a bias, as the official nn.Conv2d (outside the budget split)"))

    def __post_init__(self) -> None:
        if self.bank_size < 1:
            raise ConfigError("method.options.bank_size: must be >= 1.")
        if self.upsample_window < 1:
            raise ConfigError("method.options.upsample_window: must be >= 1.")
        if self.param_groups < -1:
            raise ConfigError("method.options.param_groups: must be -1, 0, 1 or a number of groups > 1.")
        if len(self.search_milestones) != len(self.search_gammas):
            raise ConfigError("method.options.search_gammas: need one gamma per search milestone.")
        for name in ("emb_size", "search_epochs", "search_max_params"):
            if getattr(self, name) < 1:
                raise ConfigError(f"method.options.{name}: must be a positive integer, got {getattr(self, name)}.")
        if self.search_steps_per_epoch < 0:
            raise ConfigError("method.options.search_steps_per_epoch: must be >= 0 (0 = the run's setting), "
                              f"got {self.search_steps_per_epoch}.")
        ms = list(self.search_milestones)
        if any(m < 0 for m in ms) or any(b <= a for a, b in zip(ms, ms[1:])):
            raise ConfigError(f"method.options.search_milestones: epochs >= 0, strictly increasing, got {ms}.")
        if any(not 0 < g <= 1 for g in self.search_gammas):
            raise ConfigError("method.options.search_gammas: LR factors in (0, 1], got "
                              f"{list(self.search_gammas)}.")


@dataclass
class GroupLayout:
    assignment: list[int]
    slide: bool  # official auto-grouping appends '_slide' to the share type
    source: str


def backbone_specs(arch: str, num_classes: int) -> tuple[nn.Module, tuple[LayerSpec, ...]]:
    net = create_backbone(arch, num_classes)
    return net, net.layer_specs


def plan_counts(plan: SSNPlan, specs: tuple[LayerSpec, ...], opts: SSNOptions, fixed: int) -> dict[str, int]:
    """Unique trainable parameters of an SSN built from ``plan``, by role, without building it."""
    c = {"bank": 0, "coefficients": 0, "generators": 0, "weights": 0, "norm_bias": fixed, "head": 0}
    for g in plan.groups:
        if g.singleton:
            s = specs[g.layers[0]]
            c["head" if s.role == "head" else "weights"] += s.numel
            if opts.singleton_bias or s.kind == "linear" or s.bias:
                c["head" if s.role == "head" else "norm_bias"] += s.shape[0]
            continue
        c["bank"] += g.bank
        # a grouped layer keeps the bias its architecture gives it (a transformer's linears), except the classifier
        c["norm_bias"] += sum(specs[i].shape[0] for i in g.layers if specs[i].bias and specs[i].role != "head")
        share = opts.search_share_type if plan.learn_groups else opts.share_type
        for k, rows in g.coef_counts.items():
            if share == "wavg":
                c["coefficients"] += rows * k
            elif share == "emb":
                c["coefficients"] += rows * opts.emb_size
                c["generators"] += opts.emb_size * k + k
        for i in g.layers:
            lp = plan.layers[i]
            if lp.needs_resize and lp.in_shape is None and lp.upsample_mult > 0:
                if opts.upsample_type == "mask":
                    c["generators"] += 9 * opts.upsample_window * lp.upsample_mult
                elif opts.upsample_type == "wavg":
                    c["generators"] += (lp.upsample_mult + 1) * 2 * 2
    c["total"] = sum(v for k, v in c.items())
    return c


def params_outside_weight_layers(net: nn.Module) -> int:
    """Parameters the backbone holds before any provider: norms (the classifier bias is SSN's call)."""
    return sum(p.numel() for m in net.modules() if not isinstance(m, (Conv, Linear))
               for p in m.parameters(recurse=False))


@register_method("ssn")
class SSN(Method):
    Options = SSNOptions
    summary = "Shapeshifter Networks: layers generate weights from shared parameter banks (learned groups)"
    reference = "Plummer et al., Neural Parameter Allocation Search, ICLR 2022 (BryanPlummer/SSN)"
    budget_modes = ("total", "max_params")

    # -- groups ---------------------------------------------------------------------------------
    def layout(self, specs: tuple[LayerSpec, ...], request: BuildRequest) -> GroupLayout:
        o = self.options
        n = len(specs)
        if o.groups:
            if len(o.groups) != n:
                raise ConfigError(f"method.options.groups: {len(o.groups)} ids for {n} weight layers of {request.arch}.")
            return GroupLayout(normalise(o.groups), False, "explicit")
        if o.param_groups == 1:
            return GroupLayout([0] * n, False, "single")
        if o.param_groups in (0, -1):
            return GroupLayout(auto_groups(specs, "type" if o.param_groups == 0 else "shape"), True,
                               "auto by " + ("type" if o.param_groups == 0 else "shape"))
        if o.group_type == "manual":
            return GroupLayout(manual_groups(specs), False, "manual rule")
        if o.group_type == "random":
            return GroupLayout(random_groups(n, o.param_groups, o.group_seed), False, f"random(seed={o.group_seed})")
        art = request.artifacts.get("search")
        if art is None:
            raise ConfigError(
                "method.options.group_type: learned groups come from the search phase; run `npas train` (it runs "
                "the search first), or pass the labels with --opt groups=... (e.g. from a run's artifacts/search.json)."
            )
        labels = list(art["labels"])
        if len(labels) != n:
            raise ConfigError(f"search artifact has {len(labels)} labels for {n} weight layers of {request.arch}.")
        return GroupLayout(normalise(labels), False, "learned")

    # -- planning -------------------------------------------------------------------------------
    def _plan(self, specs, layout: GroupLayout, max_params: int, learn: bool = False) -> SSNPlan:
        o = self.options
        plan = make_plan(specs, layout.assignment, max_params=max_params, bank_size=4 if learn else o.bank_size,
                         share_type=o.search_share_type if learn else o.share_type, upsample_type="inter" if learn
                         else o.upsample_type, slide=layout.slide, learn_groups=learn,
                         upsample_window=o.upsample_window)
        if o.spread_blocks and not learn:
            from .plan import spread_blocks

            spread_blocks(plan)
        return plan

    def solve_max_params(self, specs, layout: GroupLayout, fixed: int, budget: int) -> tuple[int, SSNPlan]:
        """Largest max_params whose total unique parameters fit ``budget`` (suite-wide total mode)."""

        def total(mp: int) -> tuple[int, SSNPlan] | None:
            try:
                plan = self._plan(specs, layout, mp)
            except ValueError:
                return None
            return plan_counts(plan, specs, self.options, fixed)["total"], plan

        # total(mp) is not monotone (tiny banks need large mask/wavg upsamplers), so: sample bank sizes from
        # the budget downwards, take the largest that fits, then refine the boundary above it by bisection.
        probes = sorted({budget, *(int(budget * f) for f in (0.999, 0.99, 0.97, 0.9, 0.8, 0.6, 0.4)),
                         *(budget >> i for i in range(1, 40))} - {0}, reverse=True)
        seen: list[int] = []
        good_mp, good, bad_mp = 0, None, budget + 1
        for mp in probes:
            t = total(mp)
            if t is None:
                continue
            seen.append(t[0])
            if t[0] <= budget:
                good_mp, good = mp, t
                break
            bad_mp = mp
        if good is None:
            groups = self._plan(specs, layout, 0).groups
            singles = sum(specs[g.layers[0]].numel for g in groups if g.singleton)
            if all(g.singleton for g in groups):
                raise BudgetError(f"method.options: every parameter group of this layout ({layout.source}) has a "
                                  "single layer, so nothing is shared; use param_groups=1 or fewer groups.")
            need = (f"needs at least {min(seen):,} parameters" if seen else
                    f"needs more than the {singles:,} weights of its singleton layers")
            raise BudgetError(
                f"budget: SSN on {len(specs)} layers here {need} (fixed parts: {fixed:,} norm parameters plus "
                f"singleton layers, coefficients and upsamplers), above the budget of {budget:,}. Raise the budget "
                "or use fewer groups."
            )
        fitted: dict[int, SSNPlan] = {good_mp: good[1]}

        def fits(mp: int) -> bool:
            t = total(mp)
            if t is not None and t[0] <= budget:
                fitted[mp] = t[1]
                return True
            return False

        # the largest max_params with total <= budget, between the last fit and the first overrun
        mp = largest_fitting(good_mp, bad_mp - 1, fits)
        return mp, fitted[mp]

    def resolve(self, request: BuildRequest) -> tuple[nn.Module, tuple[LayerSpec, ...], GroupLayout, SSNPlan]:
        net, specs = backbone_specs(request.arch, request.num_classes)
        layout = self.layout(specs, request)
        budget = request.budget
        fixed = params_outside_weight_layers(net)
        if budget is None:
            plan = self._plan(specs, layout, 0)
        elif budget.mode == "max_params":
            try:
                plan = self._plan(specs, layout, budget.params)
            except ValueError as exc:
                raise BudgetError(f"budget: max_params={budget.params:,} is too small for SSN here: {exc}") from None
        else:
            _, plan = self.solve_max_params(specs, layout, fixed, budget.params)
        return net, specs, layout, plan

    # -- building -------------------------------------------------------------------------------
    def build(self, request: BuildRequest) -> NPASModel:
        net, specs, layout, plan = self.resolve(request)
        return self.assemble(net, specs, plan, request.arch, learn=False)

    def assemble(self, net: nn.Module, specs, plan: SSNPlan, name: str, learn: bool) -> NPASModel:
        o = self.options
        layers = {m.spec.index: m for m in net.modules() if isinstance(m, (Conv, Linear))}
        groups: list[SSNGroup] = []
        providers: dict[int, list[GeneratedWeight]] = {}
        for g in plan.groups:
            if g.singleton:
                layer = layers[g.layers[0]]
                _make_plain(layer, o.singleton_bias)
                continue
            plans = [plan.layers[i] for i in g.layers]
            group = SSNGroup(g, plans, share_type=o.search_share_type if learn else o.share_type,
                             upsample_type="inter" if learn else o.upsample_type,
                             upsample_window=o.upsample_window, emb_size=o.emb_size, learn_groups=learn,
                             tail_init=o.bank_tail_init)
            groups.append(group)
            providers[g.id] = []
            for i in g.layers:
                layer = layers[i]
                if isinstance(layer, Linear) and layer.spec.role == "head":
                    # the official SLinear has no bias. Body linears (a transformer's qkv, proj, fc1, fc2) keep theirs:
                    # the official code never met them, and without them SSN's ViT would be another network than
                    # every other method's (they are 0.6% of ViT-Ti's parameters)
                    layer.drop_bias()
                p = GeneratedWeight(layer.spec.name)
                layer.set_provider(p)
                providers[g.id].append(p)
        member = SSNNet(net, groups, providers)
        return NPASModel([member], [name], shared={f"group{g.group_id}": g for g in groups}, built=plan)

    def no_weight_decay_roles(self) -> frozenset[str]:
        return frozenset({"coefficients"})  # official decay_skip = ['coefficients']

    def record_info(self, model: NPASModel) -> dict[str, Any]:
        plan = model.built(SSNPlan)
        return {
            "max_params": plan.max_params,
            "groups": [{"id": g.id, "layers": g.layers, "bank": g.bank, "singleton": g.singleton} for g in plan.groups],
            "templates_per_layer": [lp.templates for lp in plan.layers],
            "unread_bank_entries": sum(plan.unread_bank_entries().values()),
        }

    # -- the search phase -------------------------------------------------------------------------
    def phases(self, request: BuildRequest) -> list[Phase]:
        o = self.options
        if o.groups or o.param_groups <= 1 or o.group_type != "learned":
            return []
        from .search import run_search

        return [Phase("search", f"learn {o.param_groups} parameter groups ({o.search_epochs} epochs of a one-group "
                                f"SSN, then k-means)", lambda ctx: run_search(self, ctx),
                      epochs=o.search_epochs, max_steps_per_epoch=o.search_steps_per_epoch)]

    # options the search reads (search_model, run_search and ctx.fit); the others shape only the trained model
    SEARCH_OPTIONS = ("param_groups", "group_type", "groups", "group_seed", "emb_size", "search_max_params",
                      "search_share_type", "search_epochs", "search_milestones", "search_gammas",
                      "search_steps_per_epoch", "bank_tail_init", "upsample_window")

    def phase_inputs(self, phase: str, experiment: dict[str, Any]) -> dict[str, Any] | None:
        """The search trains a one-group SSN of ``search_max_params`` with the run's data, optimiser, seed and
        training step (``RunContext.fit``: AMP settings included): it never sees the budget, the training length
        or the final model's sharing options."""
        if phase != "search":
            return None
        opts = experiment["method"]["options"]
        train = experiment["train"]
        return {
            "options": {k: opts[k] for k in self.SEARCH_OPTIONS},
            "arch": experiment["model"]["arch"],
            "data": experiment["data"],
            "optim": experiment["optim"],
            "train": {k: train[k] for k in ("batch_size", "seed", "max_steps_per_epoch", "amp", "amp_dtype")},
        }

    def preview_artifacts(self, request: BuildRequest) -> dict[str, Any] | None:
        """Random groups of the same count stand in for the learned ones: in ``total`` mode the budget solver
        fits any grouping, so the plan's budget check holds; the exact count is known after the search."""
        _, specs = backbone_specs(request.arch, request.num_classes)
        return {"search": {"labels": random_groups(len(specs), self.options.param_groups, self.options.group_seed)}}

    def search_model(self, request: BuildRequest) -> NPASModel:
        net, specs = backbone_specs(request.arch, request.num_classes)
        layout = GroupLayout([0] * len(specs), False, "search")
        try:
            plan = self._plan(specs, layout, self.options.search_max_params, learn=True)
        except ValueError as exc:
            raise ConfigError(f"method.options.search_max_params: {exc}; raise it (default 5000000).") from None
        return self.assemble(net, specs, plan, request.arch, learn=True)


def _make_plain(layer: Conv | Linear, bias: bool) -> None:
    """A singleton group: an ordinary layer with PyTorch's default init, as the official nn.Conv2d/Linear."""
    provider = OwnedWeight(layer.spec, head=layer.spec.role == "head")
    nn.init.kaiming_uniform_(provider.weight, a=math.sqrt(5))
    layer.set_provider(provider)
    fan_in = layer.spec.fan_in
    bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
    if isinstance(layer, Conv):
        if bias or layer.bias is not None:
            if layer.bias is None:
                layer.add_bias()
            nn.init.uniform_(layer.bias, -bound, bound)
    elif layer.bias is not None:
        nn.init.uniform_(layer.bias, -bound, bound)
