"""Phases before training (e.g. a method's search phase), the context they run in, and phases shared by runs.

A phase returns a JSON-able artifact. It is written atomically to ``<run>/artifacts/<phase>.json``
together with the run id, and handed to ``Method.build`` as ``request.artifacts[<phase>]``.
A resumed run reuses a finished artifact instead of searching again; a phase interrupted midway
is re-run from its start (phases are short by design: minutes to an hour, not days). Under DDP,
rank 0 runs the phase and broadcasts the artifact to the other ranks.

Shared phases (the grid's "phase jobs"): a method declares what one of its phases depends on
(``Method.phase_inputs``); a grid runs such a phase once per distinct input (and seed) on its own
(``run_shared_phase``) and stores the artifact under a hash of the inputs in ``<results>/phases``. Every
training run of the grid then finds it there (``run_phases``) instead of repeating the search. The phase
sees the same context as inside a run (config, data, device, request), so the artifact is the one the run
would have computed itself (tests compare them). The grid only schedules these jobs (``grid.runner``) and
wraps them in a task (``grid.task``); all phase code is here.
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
from ..config import Config
from ..data import DataBundle, load_data, make_loader
from ..errors import ConfigError
from ..experiment import Experiment, resolve
from ..plugins import create_method
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


def shared_phase_target(exp: Config | Experiment, phase_name: str, phase_dir: str | Path) -> tuple[str, Path]:
    """(key, artifact path) of ``phase_name`` for ``exp``; ConfigError if the phase cannot be shared."""
    cfg = resolve(exp).config
    method = create_method(cfg.method.name, cfg.method.options)
    key = shared_phase_key(method, phase_name, cfg)
    if key is None:
        raise ConfigError(f"method {cfg.method.name!r} does not declare the inputs of phase {phase_name!r} "
                          "(Method.phase_inputs), so it runs inside each training run.")
    return key, shared_artifact_path(phase_dir, method.name, phase_name, key)


def run_shared_phase(exp: Config | Experiment, phase_name: str, phase_dir: str | Path, progress: bool = False) -> Path:
    """Compute (or find) the shared artifact of ``phase_name`` for ``exp``; returns its path."""
    from .environment import resolve_device

    experiment = resolve(exp)  # once, for both steps
    cfg = experiment.config
    key, path = shared_phase_target(experiment, phase_name, phase_dir)
    if read_artifact(path, "key", key) is not None:
        return path
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    method = create_method(cfg.method.name, cfg.method.options)
    device = resolve_device(cfg.train.device)
    data = load_data(cfg.data)
    request = experiment.request(num_classes=data.num_classes, image_size=data.input_shape[1])
    phases = {p.name: p for p in method.phases(request)}
    if phase_name not in phases:
        raise ConfigError(f"method {cfg.method.name!r} has no phase {phase_name!r} for this run "
                          f"(its phases: {', '.join(phases) or 'none'}).")
    if list(phases)[0] != phase_name:
        raise ConfigError(f"phase {phase_name!r} of {cfg.method.name!r} follows other phases; only a first phase "
                          "can run on its own.")
    work = shared_work_dir(phase_dir, method.name, phase_name, key)
    ctx = PhaseContext(cfg=cfg, data=data, device=device, run_dir=work, request=request, run_id=key,
                       progress=progress)
    artifact, seconds = execute_phase(method, phases[phase_name], request, ctx, {})
    write_json(path, {"phase": phase_name, "method": method.name, "key": key, "seconds": seconds, "artifact": artifact})
    return path
