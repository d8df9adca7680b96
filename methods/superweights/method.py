"""SuperWeight Networks: Teterwak et al., "Learning to Compose SuperWeights for Neural Parameter
Allocation Search", WACV 2024 (official code: piotr-teterwak/SuperWeights, built on BryanPlummer/SSN).

One set of banks serves an ensemble of networks of different depths and widths (or a single
network). Layers are clustered (depth bins per kernel size, optionally refined by a gradient
search); within a cluster every layer shape is an L-shaped extension of the next smaller one, and
each extension level has its own bank of templates; each layer mixes each level's templates with
learned coefficients (``plan.py``, ``network.py``). Every member is trained on every batch (losses
summed, as the trainer does for every multi-member model); the ensemble predicts with the mean of
the members' softmax outputs, and the trainer evaluates every member subset by inference FLOPs
(anytime prediction).

Phases and events, each faithful to the official training script ``main_no.py``:

- ``search`` (``group_split_epochs`` > 0, official 20): the model with depth-bin clusters and one
  shared coefficient vector per bank trains member 0 plus the first member of every other depth
  for that many epochs; then one batch's composed-weight gradients re-cluster the layers
  (``clustering.py``), lowering the similarity threshold from 0.1 by 0.05 until the budget fits.
  The artifact (clusters, coefficient matches) builds the final model.
- coefficient unsharing (``coefficient_unshare_epochs`` > 0, official 10): at the end of that
  epoch, a pass over the training data (evaluation mode) measures every member's coefficient
  gradients, and uses whose shared coefficients disagree (cosine <= 0.9) get their own copies
  (``coefficients.py``). The row map lives in the checkpoint's extra state, so a resumed run
  rebuilds exactly the post-unsharing model.

Budgets: ``max_params`` (official knob: the banks' total) or ``total`` (suite default: every unique
trainable parameter: banks, coefficients, norms, heads); no budget = one template per bank.
"""

from __future__ import annotations

import dataclasses
import math

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn as nn

from npasbench.models.generated import GeneratedWeight
from npasbench.models.layers import WeightedLayer
from npasbench.sdk import (BudgetError, BuildRequest, ConfigError, Method, MethodOptions, NPASModel, OwnedWeight, Phase,
                           check_one_domain, create_backbone, largest_fitting, member_names, parse_members,
                           register_method)

from .coefficients import RowMap, initial_coefficients, initial_rows
from .modules import CoefficientTable, Projection, TemplateBank
from .network import SWNet, bank_name
from .built import SWBuilt
from .unsharing import CoefficientUnsharing
from .plan import SWPlan, depth_bins, is_composed, make_plan, params_outside_banks, shared_layers
from .floor import SearchBudgets, search_bounds



def _h(text: str) -> dict:
    return {"help": text}


@dataclass(frozen=True)
class SuperWeightOptions(MethodOptions):
    members: str = field(default="", metadata=_h(
        "comma-separated member architectures, deepest/widest first, e.g. wrn-28-7,wrn-28-4,wrn-16-7,wrn-16-4 "
        "(official --depth/--wide + --student_depths/--student_widths); empty = the run's model.arch alone"))
    share_type: Literal["wavg_slide", "wavg", "avg", "emb"] = field(default="wavg_slide", metadata=_h(
        "how a layer mixes a bank's templates: learned coefficients (wavg_slide = wavg here: every layer reads all "
        "of its bank's templates), their mean (avg), coefficients from a learned embedding (emb)"))
    bank_size: int = field(default=8, metadata=_h("most templates per bank and per layer (official --bank_size, 8)"))
    param_group_bins: int = field(default=4, metadata=_h("depth bins forming the initial clusters (official 4)"))
    emb_size: int = field(default=24, metadata=_h("embedding size of share_type emb"))
    coefficient_share: bool = field(default=True, metadata=_h(
        "share coefficients (official --coefficient_share): one per bank in the search model and without a "
        "search; after a search, matched layers share"))
    group_split_epochs: int = field(default=20, metadata=_h("search phase epochs; 0 = keep the depth-bin clusters"))
    group_split_threshold_start: float = field(default=0.1, metadata=_h("first cosine threshold of the search"))
    group_split_threshold_decrement: float = field(default=0.05, metadata=_h(
        "threshold step when the clusters do not fit the budget"))
    search_steps_per_epoch: int = field(default=0, metadata=_h("cap on search steps per epoch; 0 = run's setting"))
    coefficient_unshare_epochs: int = field(default=10, metadata=_h(
        "unshare coefficients at the end of this epoch; 0 = never"))
    coefficient_unshare_epoch_gap: int = field(default=0, metadata=_h(
        "repeat the unsharing every this many epochs after the first; 0 = once (official default)"))
    coefficient_unshare_threshold: float = field(default=0.9, metadata=_h(
        "uses sharing coefficients stay shared when their gradients' cosine similarity is above this"))
    coefficient_unshare_batches: int = field(default=0, metadata=_h(
        "training batches the unsharing analysis reads; 0 = the whole training set (official)"))
    bank_tail_init: Literal["zeros", "kaiming"] = field(default="zeros", metadata=_h(
        "the last bank%9 entries, which the official init leaves uninitialised"))
    bank_init: Literal["official", "fan_in"] = field(default="official", metadata=_h(
        "template init: official = N(0, 2/9) whatever the layer (4-8x Kaiming for 3x3 convs, slow in short runs); "
        "fan_in = N(0, 2/fan_in), fan_in the mean over the layers reading the bank (not the official code)"))

    def __post_init__(self) -> None:
        parse_members(self.members, "SuperWeights")
        if self.bank_size < 1:
            raise ConfigError("method.options.bank_size: must be >= 1.")
        if self.param_group_bins < 1:
            raise ConfigError("method.options.param_group_bins: must be >= 1.")
        if self.emb_size < 1:
            raise ConfigError("method.options.emb_size: must be >= 1.")
        for name in ("group_split_epochs", "coefficient_unshare_epochs", "coefficient_unshare_epoch_gap",
                     "coefficient_unshare_batches", "search_steps_per_epoch"):
            if getattr(self, name) < 0:
                raise ConfigError(f"method.options.{name}: must be >= 0, got {getattr(self, name)}.")
        if not -1.0 <= self.coefficient_unshare_threshold <= 1.0:
            raise ConfigError("method.options.coefficient_unshare_threshold: a cosine similarity in [-1, 1].")
        if not -1.0 <= self.group_split_threshold_start <= 1.0:
            raise ConfigError("method.options.group_split_threshold_start: a cosine similarity in [-1, 1], got "
                              f"{self.group_split_threshold_start}.")
        if self.group_split_threshold_decrement <= 0:
            raise ConfigError("method.options.group_split_threshold_decrement: must be > 0.")

    def arch_list(self) -> list[str]:
        return [a.strip() for a in self.members.split(",") if a.strip()]


@register_method("superweights")
class SuperWeights(CoefficientUnsharing, Method):
    Options = SuperWeightOptions
    summary = "SuperWeight Networks: ensembles of any depth/width composed from shared L-shaped template banks"
    reference = "Teterwak et al., Learning to Compose SuperWeights for NPAS, WACV 2024 (piotr-teterwak/SuperWeights)"
    budget_modes = ("total", "max_params")
    demo_options = {"group_split_epochs": 1, "search_steps_per_epoch": 8, "coefficient_unshare_epochs": 2,
                    "coefficient_unshare_batches": 4}

    def reference_archs(self, arch: str) -> list[str]:
        return self.options.arch_list() or [arch]

    # -- members and clusters -----------------------------------------------------------------
    def archs(self, request: BuildRequest) -> list[str]:
        archs = self.options.arch_list() or [request.arch]
        check_one_domain(archs)
        return archs

    def backbones(self, request: BuildRequest) -> tuple[list[str], list[nn.Module], list[list[tuple[int, ...]]]]:
        archs = self.archs(request)
        nets = [create_backbone(a, request.num_classes) for a in archs]
        shapes = [[tuple(l.spec.shape) for l in shared_layers(n)] for n in nets]
        depths = [len(s) for s in shapes]
        if any(depths[i - 1] < depths[i] for i in range(1, len(depths))):
            raise ConfigError(
                f"method.options.members: members must be ordered by decreasing depth, deepest first (the official "
                f"code assumes it); {', '.join(f'{a}: {d} convolutions' for a, d in zip(archs, depths))}."
            )
        return archs, nets, shapes

    def clusters(self, request: BuildRequest, archs: list[str], shapes) -> tuple[list[list[int]], dict | None, str]:
        art = request.artifacts.get("search")
        if art is not None:
            if list(art["archs"]) != archs:
                raise ConfigError(f"search artifact is for members {art['archs']}, not {archs}; delete the run's "
                                  "artifacts/search.json or use the same members.")
            matches = {int(m): {int(l): (int(v[0]), int(v[1])) for l, v in d.items()} for m, d in art["matches"].items()}
            return [list(c) for c in art["clusters"]], matches, "search"
        return depth_bins(shapes, self.options.param_group_bins), None, "depth bins"

    def coefficient_mode(self, matches: dict | None) -> str:
        o = self.options
        if o.share_type == "avg" or not o.coefficient_share:
            return "own"
        # official main(): shared-from-the-start coefficients when there is no search or no unsharing
        if matches is None or o.coefficient_unshare_epochs == 0:
            return "bank"
        return "matched"

    # -- budgets ------------------------------------------------------------------------------
    def coefficient_width(self, templates: int) -> int:
        return self.options.emb_size if self.options.share_type == "emb" else templates

    def plan_total(self, plan: SWPlan, rows: RowMap, fixed: int) -> dict[str, int]:
        """Unique trainable parameters of a model built from ``plan``, by role, without building it."""
        c = {"bank": plan.bank_total, "coefficients": 0, "generators": 0}
        if self.options.share_type != "avg":
            for key, b in plan.banks.items():
                c["coefficients"] += rows.count(key) * self.coefficient_width(b.templates)
                if self.options.share_type == "emb":  # one projection per member reading the bank (official)
                    readers = len({m for m, _ in b.readers})
                    c["generators"] += readers * (self.options.emb_size * b.templates + b.templates)
        c["fixed"] = fixed
        c["total"] = sum(c.values())
        return c

    def resolve_plan(self, request: BuildRequest, shapes, clusters, mode: str, matches, fixed: int) -> tuple[SWPlan, RowMap]:
        budget = request.budget
        cap = self.options.bank_size

        def build(mp: int) -> tuple[SWPlan, RowMap]:
            plan = make_plan(shapes, clusters, mp, cap=cap)
            return plan, initial_rows(plan, mode, matches)

        if budget is None:
            return build(0)
        if budget.mode == "max_params":
            return build(budget.params)
        # total mode: bisection for a max_params whose unique total fits while one more overruns (the official
        # allocation is greedy, so the total is not strictly monotone in max_params; the result always fits)
        plan0, rows0 = build(0)
        lo = plan0.minimum
        need = self.plan_total(plan0, rows0, fixed)["total"]
        if need > budget.params:
            raise BudgetError(
                f"budget: SuperWeights needs at least {need:,} parameters for these members and clusters (banks "
                f"{plan0.minimum:,} with one template each, coefficients {need - plan0.minimum - fixed:,}, norms and "
                f"heads {fixed:,}), above the "
                f"budget of {budget.params:,}. Raise the budget, or use fewer/narrower members or fewer bins."
            )
        best = largest_fitting(lo, max(lo, budget.params),
                               lambda mp: self.plan_total(*build(mp), fixed)["total"] <= budget.params)
        return build(best)

    # -- what the search can fit, before anything trains (floor.py) ------------------------------------
    def search_budgets(self, request: BuildRequest) -> SearchBudgets | None:
        """The smallest budget the search can fit (``floor``) and the one from which it fits whatever the gradients
        (``guaranteed``), in both budget modes; None without a search (``group_split_epochs`` 0).

        ``max_params`` mode: the search compares its estimate with the budget itself; the floor is also the
        depth-bin model's one-template minimum (the search model is built first), the guarantee also the worst
        clustering's. ``total`` mode: the search compares with the max_params the total-mode solver gives its
        depth-bin model (one coefficient row per bank); the smallest total whose solved max_params reaches the
        bound is found by bisection (the greedy allocation makes the total non-monotone: the one below is
        checked not to reach it), then raised to what the model after the search needs for the bounding
        clustering (the grid plan's stand-in: every other member's layer on coefficient rows of its own; a
        matched layer can save a few). Not covered: a clustering accepted in an early round with an estimate
        between the guarantee and the search's max_params whose final model needs a few more coefficient rows
        than the budget (the final build's ``BudgetError``, as before)."""
        if self.options.group_split_epochs <= 0:
            return None
        key = (request.arch, request.dataset, request.num_classes)  # independent of the budget: once per model
        cache = self.__dict__.setdefault("_search_budget_cache", {})
        if key not in cache:
            cache[key] = self._search_budgets(request)
        return cache[key]

    def _search_budgets(self, request: BuildRequest) -> SearchBudgets:
        from npasbench.experiment import unshared_size

        archs, nets, shapes = self.backbones(request)
        initial = depth_bins(shapes, self.options.param_group_bins)
        bounds = search_bounds(shapes, initial)
        fixed = sum(params_outside_banks(n) for n in nets)
        cap = self.options.bank_size
        floor_mp = max(bounds.floor, make_plan(shapes, initial, 0, cap=cap).minimum)
        guaranteed_mp = max(bounds.guaranteed, make_plan(shapes, bounds.guaranteed_clusters, 0, cap=cap).minimum)
        mode = self.coefficient_mode({})

        def final_need(clusters: list[list[int]]) -> int:
            plan = make_plan(shapes, clusters, 0, cap=cap)
            return self.plan_total(plan, initial_rows(plan, mode, {}), fixed)["total"]

        reference = sum(unshared_size(a, request.dataset, request.num_classes) for a in archs)
        search_floor = self._total_reaching(request, shapes, initial, floor_mp, fixed)
        search_guaranteed = self._total_reaching(request, shapes, initial, guaranteed_mp, fixed)
        return SearchBudgets(
            floor_max_params=floor_mp, floor_total=max(search_floor, final_need(bounds.floor_clusters)),
            guaranteed_max_params=guaranteed_mp,
            guaranteed_total=max(search_guaranteed, final_need(bounds.guaranteed_clusters)),
            estimate_floor=bounds.floor, estimate_guaranteed=bounds.guaranteed, reference=reference,
            members=list(archs), search_floor_total=search_floor, search_guaranteed_total=search_guaranteed)

    def search_max_params(self, request: BuildRequest, shapes, initial, fixed: int) -> int:
        """The max_params the search compares its estimate with (``search.run_search``: the depth-bin model, one
        coefficient row per bank, solved for the request's budget)."""
        plan, _ = self.resolve_plan(request, shapes, initial, "bank", None, fixed)
        return plan.max_params

    def _total_reaching(self, request: BuildRequest, shapes, initial, target: int, fixed: int) -> int:
        """The smallest total-mode budget whose search max_params is >= ``target`` (bisection, then checked)."""
        from npasbench.budget import Budget

        def reaches(total: int) -> bool:
            try:
                r = dataclasses.replace(request, budget=Budget(total, "total"))
                return self.search_max_params(r, shapes, initial, fixed) >= target
            except BudgetError:
                return False

        plan0 = make_plan(shapes, initial, 0, cap=self.options.bank_size)
        lo = self.plan_total(plan0, initial_rows(plan0, "bank"), fixed)["total"]  # the search model's minimum
        if reaches(lo):
            return lo
        hi = max(lo + 1, target + (lo - plan0.minimum))
        while not reaches(hi):
            hi += max(b.numel for b in plan0.banks.values()) + hi // 8
        while lo + 1 < hi:  # reaches(hi), not reaches(lo)
            mid = (lo + hi) // 2
            if reaches(mid):
                hi = mid
            else:
                lo = mid
        return hi

    def search_budget_lines(self, request: BuildRequest) -> list[str]:
        """``npas params``: the search's floor and guarantee, and where the request's budget stands."""
        sb = self.search_budgets(request)
        if sb is None:
            return []
        what = f"unshared {'+'.join(sb.members)}: {sb.reference:,}"
        lines = [
            f"search floor: max_params {sb.floor_max_params:,} ({sb.share(sb.floor_max_params)}), total "
            f"{sb.floor_total:,} ({sb.share(sb.floor_total)} of the {what}): below it no gradients fit (refused "
            "before launch)",
            f"search fits whatever the gradients from: max_params {sb.guaranteed_max_params:,} "
            f"({sb.share(sb.guaranteed_max_params)}), total {sb.guaranteed_total:,} ({sb.share(sb.guaranteed_total)}); "
            "between, it depends on the gradients (BudgetError after the search)",
        ]
        verdict = self.search_budget_problem(request, sb)
        if verdict:
            lines.append(verdict)
        elif request.budget is not None:
            lines.append(f"this budget ({request.budget.params:,}, {request.budget.mode}): the search fits whatever "
                         "the gradients")
        return lines

    def search_budget_problem(self, request: BuildRequest, sb: SearchBudgets | None = None) -> str:
        """'' when the request's budget is at or above the guarantee (or there is no search or no budget); else why
        it is below the floor (``refused``) or between floor and guarantee (the search may fail)."""
        sb = sb or self.search_budgets(request)
        budget = request.budget
        if sb is None or budget is None:
            return ""
        mode, n = budget.mode, budget.params
        other = "max_params" if mode == "total" else "total"
        where = (f"SuperWeights' search for {'+'.join(sb.members)} on {request.dataset} "
                 f"({self.options.param_group_bins} param_group_bins)")
        if n < sb.floor(mode):
            need = (f", and the model after the search {sb.floor_total:,} in all (banks, a coefficient row per layer "
                    "use, norms, heads)") if mode == "total" else ""
            return (
                f"model.budget: {n:,} ({mode}) is below the smallest budget {where} can fit: {sb.floor(mode):,} "
                f"({sb.share(sb.floor(mode))} of the unshared {sb.reference:,}; budget_mode {other}: "
                f"{sb.floor(other):,}). No gradients give a one-template estimate below {sb.estimate_floor:,} (every "
                f"initial cluster merged, its largest layer counted), the depth-bin model needs "
                f"{sb.floor_max_params:,} in its banks{need}. Raise model.budget to at least {sb.floor(mode):,} (from "
                f"{sb.guaranteed(mode):,} it fits whatever the gradients) or use fewer method.options.param_group_bins."
            )
        if n < sb.guaranteed(mode):
            return (
                f"model.budget: {n:,} ({mode}) is below {sb.guaranteed(mode):,} ({sb.share(sb.guaranteed(mode))} of the "
                f"unshared {sb.reference:,}; max_params {sb.guaranteed_max_params:,}), from which {where} fits whatever "
                f"the gradients: the search can end in a BudgetError after its {self.options.group_split_epochs} "
                f"epoch(s), depending on the gradients (no union-find: the last round can leave up to "
                f"{sb.estimate_guaranteed:,} in one-template estimate; the floor is {sb.floor(mode):,})."
            )
        return ""

    def check_search_budget(self, request: BuildRequest) -> None:
        """Refuse, before anything trains, a budget below the search's floor (``search_budget_problem``)."""
        sb = self.search_budgets(request)
        if sb is not None and request.budget is not None and request.budget.params < sb.floor(request.budget.mode):
            raise BudgetError(self.search_budget_problem(request, sb))

    # -- building -------------------------------------------------------------------------------
    def build(self, request: BuildRequest) -> NPASModel:
        archs, nets, shapes = self.backbones(request)
        clusters, matches, source = self.clusters(request, archs, shapes)
        mode = self.coefficient_mode(matches)
        fixed = sum(params_outside_banks(n) for n in nets)
        plan, rows = self.resolve_plan(request, shapes, clusters, mode, matches, fixed)
        return self.assemble(archs, nets, plan, rows, {"clusters_from": source, "coefficients": mode, "unsharing": []})

    def bank_std(self, plan: SWPlan, key: tuple[int, int], inits: list[list[str]]) -> float | None:
        """The templates' standard deviation: None = the official N(0, 2/9); ``bank_init = "fan_in"``: Kaiming's
        sqrt(2 / fan_in) for the mean fan-in (in_channels x kernel) of the layers that read the bank. ``inits``:
        ``LayerSpec.init`` per member, per composed layer.

        A bank of linear layers (a transformer's; kernel key empty, so never mixed with convolutions) has no
        official init, the official code never composing them: its templates start as its layers' own init
        (``LayerSpec.init``, e.g. timm's N(0, 0.02) for a ViT), since N(0, 2/9) would start every attention and
        MLP weight 23x larger than the unshared ViT's and handicap SuperWeights there."""
        readers = plan.banks[key].readers
        if len(plan.members[readers[0][0]][readers[0][1]]) == 2:
            if {inits[m][layer] for m, layer in readers} == {"trunc_normal"}:
                return 0.02
            fans = [plan.members[m][layer][1] for m, layer in readers]
            return math.sqrt(2.0 / (sum(fans) / len(fans)))
        if self.options.bank_init == "official":
            return None
        fans = [math.prod(plan.members[m][layer][1:]) for m, layer in readers]
        return math.sqrt(2.0 / (sum(fans) / len(fans)))

    def assemble(self, archs: list[str], nets: list[nn.Module], plan: SWPlan, rows: RowMap,
                 info: dict[str, Any]) -> NPASModel:
        o = self.options
        inits = [[layer.spec.init for layer in shared_layers(net)] for net in nets]  # per member, per composed layer
        banks: dict[str, TemplateBank] = {}
        tables: dict[str, CoefficientTable] = {}
        projections: dict[str, Projection] = {}
        for key in plan.bank_order():
            b = plan.banks[key]
            name = bank_name(key)
            if o.share_type != "avg":  # coefficients drawn before the templates, as the official bank setup
                width = self.coefficient_width(b.templates)
                tables[name] = CoefficientTable(initial_coefficients(plan, rows, key, width))
            banks[name] = TemplateBank(b.templates, b.numel, o.bank_tail_init, self.bank_std(plan, key, inits))
            if o.share_type == "emb":  # each member's bank module has its own projection in the official code
                for m in sorted({m for m, _ in b.readers}):
                    projections[f"{name}_m{m}"] = Projection(o.emb_size, b.templates)
        members = []
        for m, net in enumerate(nets):
            providers = []
            for layer in net.modules():
                if hasattr(layer, "spec"):
                    layer.spec = layer.spec.with_member(m)
            for layer in shared_layers(net):
                p = GeneratedWeight(layer.spec.name)
                layer.set_provider(p)
                providers.append(p)
            for layer in net.modules():  # the classifier: plain, kaiming weight and zero bias (official init)
                if isinstance(layer, WeightedLayer) and not is_composed(layer):
                    layer.set_provider(OwnedWeight(layer.spec, head=layer.spec.role == "head"))
                    if getattr(layer, "bias", None) is not None:
                        nn.init.zeros_(layer.bias)
            members.append(SWNet(net, m, plan, banks, tables, projections, providers, o.share_type, rows))
        shared: dict[str, nn.Module] = {}
        for name in banks:
            shared[f"bank_{name}"] = banks[name]
            if name in tables:
                shared[f"coef_{name}"] = tables[name]
            for m in range(len(nets)):
                if f"{name}_m{m}" in projections:
                    shared[f"proj_{name}_m{m}"] = projections[f"{name}_m{m}"]
        return NPASModel(members, member_names(archs), shared=shared, built=SWBuilt(plan, rows, list(archs), info))

    def no_weight_decay_roles(self) -> frozenset[str]:
        return frozenset({"coefficients"})  # official decay_skip = ['coefficients']

    # -- phases -----------------------------------------------------------------------------------
    def phases(self, request: BuildRequest) -> list[Phase]:
        o = self.options
        if o.group_split_epochs <= 0:
            return []
        from .search import run_search

        return [Phase("search", f"SuperWeight cluster search: {o.group_split_epochs} epochs with shared "
                                "coefficients, then gradient-similarity clustering", lambda ctx: self._search(ctx, run_search),
                      epochs=o.group_split_epochs, max_steps_per_epoch=o.search_steps_per_epoch)]

    def _search(self, ctx, run_search) -> dict:
        self.check_search_budget(ctx.request)  # below the floor: fail before the search trains
        return run_search(self, ctx)

    def preview_artifacts(self, request: BuildRequest) -> dict[str, Any] | None:
        """The depth-bin clusters the search starts from (and only refines) stand in for the searched ones, so a
        grid plan shows the model's size and FLOPs and checks the budget before anything trains; the budget
        solver fits either clustering, the exact count is known after the search. A budget below the search's
        floor is refused here (``check_search_budget``): a grid plan names it before anything is written."""
        self.check_search_budget(request)
        archs, _, shapes = self.backbones(request)
        return {"search": {"archs": archs, "clusters": depth_bins(shapes, self.options.param_group_bins), "matches": {}}}

    # -- checkpoints: the row map is part of the model's structure ----------------------------------
    def extra_state(self, model: NPASModel) -> dict[str, Any]:
        built = model.built(SWBuilt)
        return {"rows": built.rows.to_json(), "info": built.info}

    def load_extra_state(self, model: NPASModel, state: dict[str, Any]) -> None:
        if not state:
            return
        rows = RowMap.from_json(state["rows"])
        for key in model.built(SWBuilt).plan.bank_order():
            name = f"coef_{bank_name(key)}"
            if name in model.shared:
                t = model.shared[name]
                n = rows.count(key)
                if t.rows.shape[0] != n:
                    t.resize(torch.zeros(n, t.rows.shape[1]))
        self._set_rows(model, rows)
        model.built(SWBuilt).info = state["info"]

    def record_info(self, model: NPASModel) -> dict[str, Any]:
        built = model.built(SWBuilt)
        plan = built.plan
        return {
            "members": built.archs,
            "max_params": plan.max_params,
            "bank_total": plan.bank_total,
            "bank_minimum": plan.minimum,
            "banks": [{"cluster": c, "level": w, "template": plan.banks[(c, w)].numel,
                       "templates": plan.banks[(c, w)].templates, "readers": len(plan.banks[(c, w)].readers)}
                      for c, w in plan.bank_order()],
            "clusters": plan.clusters,
            "coefficient_rows": built.rows.total_rows(),
            **built.info,
        }
