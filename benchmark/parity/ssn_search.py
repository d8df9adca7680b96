"""SSN's learned parameter groups against the official ``learn_parameter_groups``, step by step.

    python -m npasbench.parity.ssn_search --ssn /path/to/BryanPlummer/SSN [--out tests/data/ssn_search_trace.json]

The official side is the official ``main.py`` itself: imported in a child process (its argparse reads the
flags of the cell: ``--param_groups K --param_group_type learned --group_share_type wavg
--param_group_max_params N --param_group_epochs E --max_params M --share_type wavg``), and its
``learn_parameter_groups`` is called on a loader of seeded fixed batches. It builds the one-group search
model (K = 4 templates per layer over the whole bank, softmax over the coefficients, ``inter`` resize),
trains it with the official ``train`` / ``adjust_learning_rate`` / ``group_weight_decay`` (coefficients
exempt), stacks the raw coefficients of every layer and clusters them with scikit-learn's ``KMeans`` (no
``random_state``: numpy's global RNG, seeded here). What surrounds it, and nothing else:

- device lookups: ``Tensor.cuda`` / ``Module.cuda`` return the object itself and ``torch.cuda.synchronize``
  is a no-op (the code calls them unconditionally);
- the ``--dist`` path's model placement: the official function reads ``net.bank``, which only its
  ``--dist`` path supports (without ``--dist`` the model is wrapped in ``DataParallel``, which has no
  ``bank`` attribute: ``AttributeError``), and the ``--dist`` path needs apex and NCCL. So the model is
  used unwrapped, as the ``--dist`` path's ``net.to(device)`` leaves it, with the non-dist optimizer
  (``torch.optim.SGD``; apex's FusedSGD computes the same update), in a one-process gloo group: the
  function calls ``torch.distributed.barrier()`` unconditionally;
- instrumentation: ``load_model`` is wrapped to copy *our* seed-0 initial weights into the model it builds
  (``ssn_map.transfer``), a forward hook records each step's loss, the loader records the coefficients
  before each step, and ``KMeans`` is a subclass that records its input and its own k-means++ initial
  centres (computed as scikit-learn does, from the same RNG state; checked: a fit from those centres gives
  the official labels) before calling the official fit unchanged.

Then the final model of the restart (``--param_group_type reload`` in the official workflow) is built by
the official ``load_model`` from the learned labels: its trainable count and group layout.

Our side (``replay_ours``, no official code): the same initial weights (our seed-0 search model), the
same batches, our optimizer construction, float64; our ``layer_features`` (the k-means input), our
``kmeans`` started from the official initial centres, and our final model built from the official
labels. ``tests/test_ssn_search_parity.py`` requires the recorded numbers.

Deliberate difference, pinned there: the search in ``npas train`` runs our seeded k-means (``group_seed``,
10 k-means++ restarts, best inertia), not scikit-learn's unseeded single run; the file records both
clusterings' inertia on the same coefficients.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..atomic import write_json
from .official import checkout_commit, float64
from .steps import fixed_batches

LR, MOMENTUM, WD = 0.1, 0.9, 5e-4


@dataclass(frozen=True)
class Cell:
    """One search to compare: the network, the group count, the search bank and the final model's budget."""

    arch: str
    num_classes: int
    groups: int
    search_max_params: int  # official --param_group_max_params
    max_params: int  # official --max_params of the final model
    epochs: int  # official --param_group_epochs (each epoch: the same fixed batches)
    steps: int  # batches per epoch
    batch: int
    size: int  # image side
    kmeans_seed: int = 0  # numpy's global seed for the official KMeans

    @property
    def dataset(self) -> str:
        return {100: "cifar100", 10: "cifar10"}.get(self.num_classes, "imagenet")


CELLS: dict[str, Cell] = {
    "wrn-16-1-g2": Cell("wrn-16-1", 100, 2, 200_000, 50_000, epochs=2, steps=6, batch=16, size=32),
    "wrn-16-1-g4": Cell("wrn-16-1", 100, 4, 5_000_000, 45_000, epochs=2, steps=6, batch=16, size=32, kmeans_seed=1),
    "resnet50-ssn-g4": Cell("resnet50-ssn", 1000, 4, 5_000_000, 5_000_000, epochs=1, steps=3, batch=4, size=64),
}


# -- our side -------------------------------------------------------------------------------------------------
def our_method(cell: Cell):
    from ..plugins import create_method

    return create_method("ssn", {"param_groups": cell.groups, "group_type": "learned", "search_share_type": "wavg",
                                 "search_max_params": cell.search_max_params})


def our_search_model(cell: Cell):
    """Our one-group search model at seed 0, float64 (call inside ``float64()``)."""
    from ..factory import make_request

    torch.manual_seed(0)
    model = our_method(cell).search_model(make_request(cell.arch, cell.dataset, None))
    return model.double()


def batches(cell: Cell) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.double(), y) for x, y in fixed_batches(cell.steps, cell.batch, cell.num_classes, cell.size)]


def final_layout_ours(cell: Cell, labels: list[int]) -> dict[str, Any]:
    """Our final model built from ``labels`` (the official ``reload`` restart): count and groups."""
    from ..budget import Budget
    from ..factory import create_model
    from ..methods.ssn.plan import SSNPlan

    built = create_model("ssn", cell.arch, cell.dataset, Budget(cell.max_params, "max_params"),
                         {"share_type": "wavg", "upsample_type": "inter", "groups": ",".join(map(str, labels))})
    plan = built.model.built(SSNPlan)
    groups = [{"layers": sorted(g.layers), "bank": 0 if g.singleton else int(g.bank), "singleton": g.singleton}
              for g in plan.groups]
    return {"params": built.report(flops=False).total, "groups": sorted(groups, key=lambda g: g["layers"])}


def replay_ours(cell: Cell, official: dict[str, Any] | None = None) -> dict[str, Any]:
    """Our search on the cell: per-step losses and coefficients, the k-means input, k-means from the official
    initial centres (``official["kmeans_init_index"]``), and our final model from the official labels."""
    from ..config import OptimConfig
    from ..methods.ssn.kmeans import kmeans
    from ..methods.ssn.search import layer_features
    from ..trainer.optim import build_optimizer

    with float64():
        model = our_search_model(cell)
        method = our_method(cell)
        cfg = OptimConfig(lr=LR, momentum=MOMENTUM, nesterov=True, weight_decay=WD, schedule="constant")
        opt = build_optimizer(model, cfg, method.no_weight_decay_roles())
        model.train()
        losses, coefs = [], []
        data = batches(cell)
        for _ in range(cell.epochs):
            for x, y in data:
                coefs.append(layer_features(model).tolist())
                loss = F.cross_entropy(model(x)[0], y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
        feats = layer_features(model)
    out: dict[str, Any] = {"losses": losses, "coefficients": coefs, "kmeans_input": feats.tolist()}
    seeded, inertia = kmeans(feats, cell.groups, seed=0)
    out["ours_seeded_labels"], out["ours_seeded_inertia"] = [int(v) for v in seeded], inertia
    if official is not None:
        init = feats[official["kmeans_init_index"]]
        labels, inertia = kmeans(feats, cell.groups, init=init)
        out["labels_from_official_init"] = [int(v) for v in labels]
        out["inertia_from_official_init"] = inertia
        out["final"] = final_layout_ours(cell, official["labels"])
    return out


def same_partition(a: list[int], b: list[int]) -> bool:
    """Equal clusterings up to a renaming of the labels."""
    from ..methods.ssn.groups import normalise

    return normalise(a) == normalise(b)


def inertia_of(x: np.ndarray, labels: list[int]) -> float:
    x = np.asarray(x, dtype=np.float64)
    lab = np.asarray(labels)
    return float(sum(((x[lab == c] - x[lab == c].mean(0)) ** 2).sum() for c in np.unique(lab)))


# -- the official side (a child process) ------------------------------------------------------------------------
def _official_flags(cell: Cell) -> list[str]:
    if cell.arch == "resnet50-ssn":  # the official ImageNet model (main.py --arch wrn_imagenet)
        arch, depth, width = "wrn_imagenet", "50", "1"
    elif cell.arch.startswith("wrn-"):
        arch, depth, width = "wrn", *cell.arch.split("-")[1:]
    else:
        raise ValueError(f"official SSN search: wrn-D-K or resnet50-ssn, got {cell.arch}")
    return ["unused-data-path", "--dataset", cell.dataset, "--arch", arch,
            "--depth", depth, "--wide", width, "--ngpu", "0", "--manualSeed", "0",
            "--learning_rate", str(LR), "--momentum", str(MOMENTUM), "--decay", str(WD),
            "--param_groups", str(cell.groups), "--param_group_type", "learned", "--group_share_type", "wavg",
            "--param_group_max_params", str(cell.search_max_params), "--param_group_epochs", str(cell.epochs),
            "--param_group_upsample_type", "inter", "--share_type", "wavg", "--upsample_type", "inter",
            "--max_params", str(cell.max_params), "--print_freq", "1000000"]


class _Loader:
    """Fixed batches as the official ``train`` iterates them; records the coefficients before each step."""

    def __init__(self, data, coefficients, on_batch):
        self.data, self.coefficients, self.on_batch = data, coefficients, on_batch

    def __len__(self):
        return len(self.data)

    def __iter__(self):
        for x, y in self.data:
            self.on_batch(x, y)
            yield x, y


def official_coefficients(net: nn.Module) -> np.ndarray:
    """The official extraction: parameters named ``coefficients`` but not ``mask``, stacked in order."""
    return torch.stack([p.data for n, p in net.named_parameters()
                        if "coefficients" in n and "mask" not in n]).cpu().numpy()


def _official_child(repo: str, name: str, out: str) -> None:  # pragma: no cover - runs in the recorder's child
    cell = CELLS[name]
    work = tempfile.mkdtemp(prefix="npas-ssn-search-")
    os.chdir(work)  # main.py creates ./results at import
    sys.path.insert(0, str(Path(repo).resolve()))
    sys.argv = ["main.py", *_official_flags(cell)]
    torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    nn.Module.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    torch.cuda.synchronize = lambda *a, **k: None  # type: ignore[assignment]
    torch.distributed.init_process_group("gloo", init_method=f"file://{work}/pg", rank=0, world_size=1)
    torch.set_default_dtype(torch.float64)
    import main as official  # noqa: E402  (the official main.py, from the checkout)
    from sklearn.cluster import KMeans, kmeans_plusplus

    from .ssn_map import transfer

    record: dict[str, Any] = {"losses": [], "coefficients": []}
    current: dict[str, Any] = {}
    original_load = official.load_model

    def load_model(*args, **kwargs):
        net = original_load(*args, **kwargs)
        net = net.module if isinstance(net, nn.DataParallel) else net  # the --dist path's placement
        net.double()
        if kwargs.get("groups") is None and "net" not in current:  # the search model: our initial weights
            with float64():
                ours = our_search_model(cell)
            record["tensors_copied"] = transfer(net, ours, "to_official")
            current["net"] = net
            net.register_forward_hook(lambda m, i, o: record["losses"].append(
                float(F.cross_entropy(o.detach(), current["y"]))))
        return net

    def on_batch(x, y):
        current["y"] = y
        record["coefficients"].append(official_coefficients(current["net"]).tolist())

    class RecordingKMeans(KMeans):
        def fit(self, X, y=None, sample_weight=None):
            state = np.random.get_state()
            xc = np.asarray(X, dtype=np.float64)
            _, index = kmeans_plusplus(xc - xc.mean(0), self.n_clusters, random_state=np.random.mtrand._rand)
            np.random.set_state(state)
            record["kmeans_input"] = xc.tolist()
            record["kmeans_init_index"] = [int(i) for i in index]
            result = super().fit(X, y, sample_weight)
            check = KMeans(n_clusters=self.n_clusters, init=xc[index], n_init=1).fit(xc)
            record["init_reproduces_labels"] = same_partition(list(check.labels_), list(result.labels_))
            record["kmeans_n_init"] = int(result._n_init) if hasattr(result, "_n_init") else None
            return result

    official.load_model = load_model
    official.KMeans = RecordingKMeans
    data = batches(cell)
    log = open(os.path.join(work, "log.txt"), "w")
    state = {k: v for k, v in official.args._get_kwargs()}
    np.random.seed(cell.kmeans_seed)
    labels = [int(v) for v in official.learn_parameter_groups(_Loader(data, None, on_batch), state,
                                                              cell.num_classes, log)]
    record["labels"] = labels
    record["official_inertia"] = inertia_of(np.asarray(record["kmeans_input"]), labels)
    final = original_load(cell.num_classes, log, official.args.max_params, "wavg", "inter", groups=np.asarray(labels))
    final = final.module if isinstance(final, nn.DataParallel) else final
    record["final"] = {"params": sum(p.numel() for p in final.parameters() if p.requires_grad),
                       "groups": _official_groups(final)}
    import sklearn

    record["sklearn"] = sklearn.__version__
    Path(out).write_text(json.dumps(record))


def _official_groups(net: nn.Module) -> list[dict[str, Any]]:
    out = []
    for name, bank in net.bank.named_children():
        if not name.startswith("_param_group_"):
            continue
        layers = sorted(int(layer.layer_id) for layer in bank._layers)
        single = bool(getattr(bank, "single_layer", False))
        out.append({"layers": layers, "bank": 0 if single else len(bank._params), "singleton": single})
    return sorted(out, key=lambda g: g["layers"])


def record_official(repo: str, name: str) -> dict[str, Any]:
    """Run the official search of cell ``name`` in a child process; its numbers."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "official.json"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]),
                                                                          os.environ.get("PYTHONPATH", "")]))}
        cmd = [sys.executable, "-c", "import sys; from npasbench.parity.ssn_search import _official_child; "
               "_official_child(*sys.argv[1:])", repo, name, str(out)]
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if r.returncode != 0:
            raise RuntimeError(f"official search of {name} failed:\n{r.stderr[-4000:]}")
        return json.loads(out.read_text())


def max_rel(ours, official) -> float:
    """Largest |ours - official| over the largest |official| (one figure for a whole trajectory)."""
    a, b = np.asarray(ours, dtype=np.float64), np.asarray(official, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def measure(ours: dict[str, Any], off: dict[str, Any]) -> dict[str, Any]:
    """The comparison's figures, as results/parity/parity.md shows them."""
    return {"steps": len(off["losses"]), "layers": len(off["labels"]),
            "loss_rel": max(abs(p - q) / abs(q) for p, q in zip(ours["losses"], off["losses"])),
            "coefficients_rel": max_rel(ours["coefficients"], off["coefficients"]),
            "kmeans_input_rel": max_rel(ours["kmeans_input"], off["kmeans_input"]),
            "same_groups": same_partition(ours["labels_from_official_init"], off["labels"]),
            "same_final_model": ours["final"] == off["final"], "final_params": off["final"]["params"],
            "official_inertia": off["official_inertia"], "ours_seeded_inertia": ours["ours_seeded_inertia"]}



def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m npasbench.parity.ssn_search", description=__doc__.splitlines()[0])
    p.add_argument("--ssn", required=True, help="checkout of BryanPlummer/SSN")
    p.add_argument("--out", default="tests/data/ssn_search_trace.json")
    p.add_argument("--only", nargs="*", default=None, help="cells: " + ", ".join(CELLS))
    a = p.parse_args(argv)
    cells = {}
    for name in CELLS:
        if a.only and name not in a.only:
            continue
        print(f"{name}: official search ...", file=sys.stderr, flush=True)
        off = record_official(a.ssn, name)
        ours = replay_ours(CELLS[name], off)
        measured = measure(ours, off)
        print(f"  labels {off['labels']}  {measured}", file=sys.stderr, flush=True)
        cells[name] = {"cell": asdict(CELLS[name]), "official": off, "measured": measured}
    write_json(Path(a.out), {
        "notes": "The official learn_parameter_groups (main.py) on seeded fixed batches from our seed-0 initial "
                 "weights, float64; written by python -m npasbench.parity.ssn_search (see its docstring).",
        "official": checkout_commit(a.ssn), "torch": torch.__version__, "cells": cells})
    return 0


if __name__ == "__main__":
    sys.exit(main())
