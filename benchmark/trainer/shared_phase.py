"""A shareable phase run on its own: the grid's "phase job".

A method declares what one of its phases depends on (``Method.phase_inputs``); a grid runs such a
phase once per distinct input (and seed) and stores the artifact under a hash of the inputs in
``<results>/phases``. Every training run of the grid then finds it there (``run_phases``) instead of
repeating the search. The phase sees the same context as inside a run (config, data, device,
request), so the artifact is the one the run would have computed itself (tests compare them).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..atomic import write_json
from ..config import Config
from ..data import load_data
from ..errors import ConfigError
from ..experiment import Experiment, resolve
from ..plugins import create_method
from .phase import (PhaseContext, execute_phase, read_artifact, shared_artifact_path, shared_phase_key,
                    shared_work_dir)


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
