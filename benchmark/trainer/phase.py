"""Phases before training (e.g. a method's search phase) and the context they run in.

A phase returns a JSON-able artifact. It is written atomically to ``<run>/artifacts/<phase>.json``
together with the config hash, and handed to ``Method.build`` as ``request.artifacts[<phase>]``.
A resumed run reuses a finished artifact instead of searching again; a phase interrupted midway
is re-run from its start (phases are short by design: minutes to an hour, not days). Under DDP,
rank 0 runs the phase and broadcasts the artifact to the other ranks.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..atomic import write_json
from ..run_folder import RunFolder
from ..contract import BuildRequest, Method, NPASModel, Phase, RunContext, T
from ..data import DataBundle, make_loader
from ..errors import ConfigError
from .distributed import DistInfo, broadcast_object
from .optim import build_optimizer, set_lr
from .schedule import LRSchedule
from .step import StepSettings, grad_scaler_for, train_step


@dataclass
class PhaseContext(RunContext):
    """The trainer's ``RunContext``: the run's config, data, device, loaders, ``fit`` and ``agree``."""

    cfg: Any
    data: DataBundle
    device: torch.device
    run_dir: Path
    request: BuildRequest
    run_id: str
    progress: bool = True
    dist: DistInfo | None = None  # None: one process

    def loader(self, split: str = "train", *, batch_size: int | None = None, seed: int | None = None,
               drop_last: bool = True):
        cfg = self.cfg
        return make_loader(self.data, split, batch_size or cfg.train.batch_size, cfg.data,
                           seed=cfg.train.seed if seed is None else seed, drop_last=drop_last, device=self.device)

    def agree(self, value: T) -> T:
        if self.dist is None or not self.dist.enabled:
            return value
        return broadcast_object(value, self.dist)

    def fit(self, model: NPASModel, epochs: int, *, lr: float | None = None, milestones: tuple[float, ...] = (),
            gammas: tuple[float, ...] = (), batch_size: int | None = None, max_steps_per_epoch: int | None = None,
            no_decay_roles: frozenset[str] = frozenset(), seed: int | None = None, desc: str = "phase") -> dict[str, float]:
        """Train ``model`` for ``epochs`` with the run's optimizer settings (SGD, step schedule).

        Deterministic for a seed; returns the last epoch's mean training loss.
        """
        cfg = self.cfg
        if epochs <= 0:
            raise ConfigError(f"{desc}: phase epochs must be positive, got {epochs}")
        optim_cfg = dataclasses.replace(cfg.optim, lr=lr or cfg.optim.lr, schedule="step",
                                        milestones=tuple(milestones), gammas=tuple(gammas),
                                        milestones_unit="epoch", warmup_epochs=0.0)
        model.to(self.device).train()
        loader = self.loader("train", batch_size=batch_size, seed=seed)
        steps = len(loader)
        limit = max_steps_per_epoch if max_steps_per_epoch is not None else cfg.train.max_steps_per_epoch
        if limit:
            steps = min(steps, limit)
        opt = build_optimizer(model, optim_cfg, no_decay_roles)
        sched = LRSchedule.from_config(optim_cfg, epochs, steps)
        settings, scaler = StepSettings.from_config(cfg, self.device), grad_scaler_for(cfg, self.device)
        last = math.nan
        for epoch in tqdm(range(epochs), desc=desc, unit="ep", disable=not self.progress, leave=False):
            total, seen = 0.0, 0
            for b, (x, y) in enumerate(loader.epoch(epoch)):
                if b >= steps:
                    break
                set_lr(opt, sched.lr(epoch, b))
                loss = train_step(model, model, opt, scaler, settings, x, y)  # the run's one training step
                total += loss.item() * y.shape[0]
                seen += y.shape[0]
            last = total / max(seen, 1)
            if not math.isfinite(last):
                raise FloatingPointError(f"{desc}: training loss became non-finite in epoch {epoch + 1}")
        return {"loss": last}


def artifact_path(run_dir: Path, phase: str) -> Path:
    return RunFolder(run_dir).artifact(phase)


def shared_phase_key(method: Method, phase: str, cfg: Any) -> str | None:
    """The content address of ``phase``'s artifact when the method declares what it depends on, else None."""
    from ..experiment import digest, identity_dict

    inputs = method.phase_inputs(phase, identity_dict(cfg))
    if inputs is None:
        return None
    return digest({"method": method.name, "phase": phase, "inputs": inputs})


def shared_artifact_path(phase_dir: str | Path, method: str, phase: str, key: str) -> Path:
    return Path(phase_dir) / f"{method}-{phase}-{key}.json"


def shared_work_dir(phase_dir: str | Path, method: str, phase: str, key: str) -> Path:
    """The folder a shared phase works (and is locked) in while it computes its artifact."""
    return Path(phase_dir) / f"{method}-{phase}-{key}.work"


def read_artifact(path: Path, field: str, value: str) -> dict[str, Any] | None:
    """The artifact stored in ``path`` if it is readable and its ``field`` equals ``value``."""
    from ..records import read_json_object, with_run_id

    stored = read_json_object(path)  # a regular file under the cap, UTF-8 JSON, an object; else None
    stored = with_run_id(stored) if isinstance(stored, dict) else stored  # an artifact before schema 3: config_hash
    if isinstance(stored, dict) and stored.get(field) == value and isinstance(stored.get("artifact"), dict):
        return stored["artifact"]
    return None


def execute_phase(method: Method, phase: Phase, request: BuildRequest, ctx: PhaseContext,
                  artifacts: dict[str, Any]) -> tuple[dict[str, Any], float]:
    t0 = time.perf_counter()
    if ctx.progress:
        tqdm.write(f"phase {phase.name}: {phase.description}")
    ctx.request = dataclasses.replace(request, artifacts=dict(artifacts))
    artifact = phase.run(ctx)
    if not isinstance(artifact, dict):
        raise TypeError(f"phase {phase.name!r} of {method.name!r} must return a dict, got {type(artifact).__name__}")
    return artifact, round(time.perf_counter() - t0, 3)


def run_phases(method: Method, request: BuildRequest, ctx: PhaseContext, dist: DistInfo) -> dict[str, Any]:
    """Run (or reuse) every phase of ``method``; returns {phase name: artifact}.

    Reuse order: this run's own ``artifacts/<phase>.json`` (same config hash), then the shared store
    ``run.phase_dir`` (same content key, see ``Method.phase_inputs``); otherwise the phase runs, and a
    shareable artifact is also stored there for the runs that need the same one.
    """
    artifacts: dict[str, Any] = dict(request.artifacts)
    phase_dir = getattr(ctx.cfg.run, "phase_dir", "")
    for phase in method.phases(request):
        path = artifact_path(ctx.run_dir, phase.name)
        artifact = None
        if dist.is_main:
            artifact = read_artifact(path, "run_id", ctx.run_id)
            key = shared_phase_key(method, phase.name, ctx.cfg) if phase_dir else None
            shared = shared_artifact_path(phase_dir, method.name, phase.name, key) if key else None
            source = "run"
            if artifact is None and shared is not None and key is not None:
                artifact = read_artifact(shared, "key", key)
                source = f"shared {shared}" if artifact is not None else source
                if artifact is not None and ctx.progress:
                    tqdm.write(f"phase {phase.name}: reusing {shared}")
            seconds = 0.0
            if artifact is None:
                artifact, seconds = execute_phase(method, phase, request, ctx, artifacts)
                if shared is not None:
                    write_json(shared, {"phase": phase.name, "method": method.name, "key": key, "seconds": seconds,
                                        "artifact": artifact})
            if not path.is_file() or read_artifact(path, "run_id", ctx.run_id) is None:
                write_json(path, {"phase": phase.name, "method": method.name, "run_id": ctx.run_id,
                                  "seconds": seconds, "source": source, "artifact": artifact})
        artifact = broadcast_object(artifact, dist)
        artifacts[phase.name] = artifact
    return artifacts
