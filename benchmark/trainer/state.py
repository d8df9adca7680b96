"""The run state: what a checkpoint holds and what a resume restores, in one place.

``TrainState`` is the loop's progress (step, the running epoch loss, the best validation result,
timing, wall time spent by earlier processes, which checkpoint it resumed from). ``checkpoint_payload``
puts it together with the training objects (model, optimizer, schedule, grad scaler, every RNG state,
the method's extra state) into a checkpoint payload; ``TrainState.from_payload``, ``restore_model`` and
``restore_optimizer`` read one back. ``best_payload`` is the schema of ``best.pt`` (the weights that
the validation split selected). The files themselves (atomic writes, naming, pruning, the checks a
payload passes before use) are ``checkpoint.py``'s: "change what a checkpoint holds" is this module,
"change how checkpoints are stored" is that one.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

FORMAT_VERSION = 1
# what a resume reads; a payload without one of them is refused by name (checkpoint.load_checkpoint), not a KeyError
CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "scaler", "epoch", "batch", "step", "rng", "extra",
                   "run_id", "metrics_lines", "best", "epoch_acc", "timing")
# best.pt: the selected weights, with the epoch that selected them
BEST_KEYS = ("model", "extra", "epoch", "run_id")


def _no_best() -> dict[str, float | int]:
    return {"top1": -1.0, "epoch": -1}


def _no_timing() -> dict[str, float]:
    return {"train_s": 0.0, "train_images": 0, "eval_s": 0.0, "eval_images": 0}


@dataclass
class TrainState:
    """The mutable state of one run: its progress, which survives a restart (everything else is rebuilt from
    the config, ``setup.py``), and what this process has seen of the run so far (the fields below the line).
    """

    step: int = 0
    loss_sum: float = 0.0  # this rank's running training loss over the current epoch (sum over examples)
    seen: int = 0  # examples behind loss_sum
    best: dict[str, Any] = field(default_factory=_no_best)  # best validation top-1 and its epoch
    timing: dict[str, float] = field(default_factory=_no_timing)  # train/eval seconds and images, all processes
    wall_before: float = 0.0  # wall seconds spent by the processes before this one
    resumed_from: str | None = None
    # -- this process's, not checkpointed
    stage: str = "start"  # what the run is doing (a stop before training names it: "data", "model and phases", ...)
    claimed: bool = False  # this process holds the run folder's lock (a stop may then write to the folder)
    started: float = 0.0  # time.perf_counter() when this process started the run
    setup_s: float = 0.0  # this process: start of the run to its first training step
    last_eval: tuple[int, dict[str, Any]] | None = None  # (epoch, metrics) of the newest evaluation
    diverged_at: dict[str, Any] | None = None  # where the run went non-finite

    def resume(self, payload: dict[str, Any], path: str, rank: int, world_size: int) -> None:
        """Take the progress of a checkpoint (``from_payload``); this process's fields stay."""
        restored = TrainState.from_payload(payload, path, rank, world_size)
        for name in CHECKPOINTED_FIELDS:
            setattr(self, name, getattr(restored, name))

    def reset_epoch_loss(self) -> None:
        self.loss_sum, self.seen = 0.0, 0

    def add_train_time(self, seconds: float, images: int) -> None:
        self.timing["train_s"] += seconds
        self.timing["train_images"] += images

    def add_eval_time(self, seconds: float, images: int) -> None:
        self.timing["eval_s"] += seconds
        self.timing["eval_images"] += images

    def progress_payload(self, epoch: int, batch: int, per_rank: list[list[float]], wall_now: float) -> dict[str, Any]:
        """The progress part of a checkpoint. ``per_rank``: every rank's ``[loss_sum, seen]`` (gathered)."""
        return {
            "epoch": epoch,
            "batch": batch,
            "step": self.step,
            "best": dict(self.best),
            # every rank's share of the running epoch loss (rank r resumes with per_rank[r])
            "epoch_acc": {"loss_sum": sum(a[0] for a in per_rank), "seen": int(sum(a[1] for a in per_rank)),
                          "per_rank": [[a[0], int(a[1])] for a in per_rank]},
            "timing": dict(self.timing, wall_s_before=self.wall_before + wall_now),
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any], path: str, rank: int, world_size: int) -> "TrainState":
        """The state a checkpoint resumes. Resumed with another world size, rank 0 carries the epoch's totals."""
        acc = payload["epoch_acc"]
        per_rank = acc.get("per_rank")
        if per_rank is not None and len(per_rank) == world_size:
            loss_sum, seen = float(per_rank[rank][0]), int(per_rank[rank][1])
        else:
            loss_sum = float(acc["loss_sum"]) if rank == 0 else 0.0
            seen = int(acc["seen"]) if rank == 0 else 0
        timing = dict(payload["timing"])
        wall_before = float(timing.pop("wall_s_before"))
        return cls(step=int(payload["step"]), loss_sum=loss_sum, seen=seen, best=dict(payload["best"]),
                   timing={**_no_timing(), **timing}, wall_before=wall_before, resumed_from=path)


CHECKPOINTED_FIELDS = ("step", "loss_sum", "seen", "best", "timing", "wall_before", "resumed_from")


def rng_state() -> dict[str, Any]:
    """Every RNG a run draws from (torch, numpy, Python, CUDA when present), as tensors and plain values
    (``torch.load(weights_only=True)`` reads them)."""
    np_state: Any = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"key": np_state[0], "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                  "cached_gaussian": float(np_state[4]), "keys": torch.from_numpy(np_state[1].astype(np.int64))},
        "python": _python_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _python_rng_state() -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    return {"version": version, "internal": list(internal), "gauss": gauss}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["key"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_payload(progress: dict[str, Any], *, model: torch.nn.Module,
                       optimizer: torch.optim.Optimizer, schedule: Any, scaler: Any, method: Any,
                       run_id: str, metrics_lines: int) -> dict[str, Any]:
    """Everything a bit-exact continuation needs (``progress`` from ``TrainState.progress_payload``)."""
    payload = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": schedule.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": rng_state(),
        "extra": method.extra_state(model),
        "run_id": run_id,
        "metrics_lines": metrics_lines,
        **progress,
    }
    assert set(payload) == set(CHECKPOINT_KEYS), sorted(set(payload) ^ set(CHECKPOINT_KEYS))
    return payload


def restore_model(payload: dict[str, Any], model: torch.nn.Module, method: Any) -> None:
    """The method's extra state first (it may regrow the parameter set), then the weights."""
    method.load_extra_state(model, payload["extra"])
    model.load_state_dict(payload["model"])


def restore_optimizer(payload: dict[str, Any], optimizer: torch.optim.Optimizer, scaler: Any) -> None:
    """Optimizer and grad scaler, then every RNG: the last step before training continues."""
    optimizer.load_state_dict(payload["optimizer"])
    scaler.load_state_dict(payload["scaler"])
    set_rng_state(payload["rng"])


def best_payload(model: torch.nn.Module, method: Any, epoch: int, run_id: str) -> dict[str, Any]:
    """The weights that the validation split selected at ``epoch`` (``best.pt``)."""
    return {"model": model.state_dict(), "extra": method.extra_state(model), "epoch": epoch, "run_id": run_id}
