"""The result record (``result.json``): one per run, the input of every leaderboard.

Schema version 3 -- keys: schema_version, status, run_id (the hash of the resolved experiment,
``experiment.run_id``), method{name, source} (its options are in config.method.options), method_code{source, distribution, version,
git_sha, digest, files} (``method_code``: which code of the method made the run), arch, dataset
(``DataBundle.describe()``), synthetic, budget, params (``ParamReport``), metrics (test top-1/top-5,
per member for ensembles), selection (which split chose the reported weights), seed, config,
git{sha, dirty}, packages, hardware, timing (wall time, train/eval throughput),
peak_memory_mb, pipeline, phases, resumed_from (the last checkpoint resumed), history (``history.jsonl``: every
start, stop, resume, requeue and end of the run, with host, pid and SLURM job), created_at; under SLURM also
slurm{job_id, array_job_id, array_task_id, requeues (restarts of this run under SLURM over its whole history, by
requeue or resubmission), jobs (every job that started it)}.
"""

from __future__ import annotations

import datetime as _dt
import os
import resource
import sys
from dataclasses import dataclass
from typing import Any

import torch

from ..config import Config
from ..method_code import method_code
from ..plugins import METHODS
from ..provenance import git_info, hardware, package_versions
from .history import slurm_summary
from ..records import SCHEMA_VERSION  # defined beside the reader, re-exported here for writers


@dataclass(frozen=True)
class RunSummary:
    """What a run reports, collected by the trainer at its end: the record is built from this value alone
    (so the record's schema has one room, and this module does not know the trainer)."""

    cfg: Config
    run_id: str
    method_name: str
    method_code: dict[str, Any]  # method_code.MethodCode.to_dict(), taken when the run built its model
    members: list[str]
    method_info: dict[str, Any]
    dataset: dict[str, Any]  # DataBundle.describe()
    synthetic: bool
    budget: dict[str, Any] | None
    params: dict[str, Any]  # ParamReport.to_dict()
    steps: int
    device: torch.device
    world_size: int
    timing: dict[str, float]  # TrainState.timing: train/eval seconds and images over every process
    setup_s: float  # this process: data, model, phases, restore
    pipeline: str  # which data pipeline served the training batches: "memory" | "ffcv" | "torchvision"
    artifacts: tuple[str, ...]  # the phases' artifacts (artifacts/<name>.json)
    resumed_from: str | None
    diverged_at: dict[str, Any] | None


def peak_memory_mb(device: torch.device) -> dict[str, float]:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"host_rss_mb": rss / (1024 if sys.platform != "darwin" else 1024 * 1024)}
    if device.type == "cuda":
        out["device_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def build_record(s: RunSummary, status: str, final: dict[str, Any], selection: dict[str, Any], wall: float,
                 history: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    cfg = s.cfg
    timing = s.timing
    record: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "status": status,
        "run_id": s.run_id,
        # the options live once, in config.method.options (typed, every default filled in)
        "method": {"name": s.method_name, "source": METHODS.entry(s.method_name).source},
        "method_code": s.method_code,
        "arch": cfg.model.arch,
        "members": list(s.members),
        "method_info": s.method_info,
        "dataset": s.dataset,
        "synthetic": s.synthetic,
        "budget": s.budget,
        "params": s.params,
        "metrics": final,
        "selection": selection,
        "epochs": cfg.train.epochs,
        "steps": s.steps,
        "seed": cfg.train.seed,
        "config": cfg.to_dict(),
        "git": git_info(),
        "packages": package_versions(),
        "hardware": hardware(s.device),
        "world_size": s.world_size,
        "timing": {
            "wall_s": round(wall, 3),
            "setup_s": round(s.setup_s, 3),
            "train_s": round(timing["train_s"], 3),
            "eval_s": round(timing["eval_s"], 3),
            "train_images_per_s": (timing["train_images"] / timing["train_s"]) if timing["train_s"] > 0 else None,
            "eval_images_per_s": (timing["eval_images"] / timing["eval_s"]) if timing["eval_s"] > 0 else None,
        },
        "peak_memory": peak_memory_mb(s.device),
        "pipeline": s.pipeline,
        "phases": {k: f"artifacts/{k}.json" for k in s.artifacts},
        "resumed_from": s.resumed_from,
        "history": list(history or []),
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if status == "diverged":
        record["diverged_at"] = s.diverged_at
    if "SLURM_JOB_ID" in os.environ:  # the scheduler's view: which job, and how often the run was started again
        over = slurm_summary(list(history or []))
        restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
        record["slurm"] = {"job_id": os.environ["SLURM_JOB_ID"], "array_job_id": os.environ.get("SLURM_ARRAY_JOB_ID"),
                           "array_task_id": os.environ.get("SLURM_ARRAY_TASK_ID"),
                           "requeues": max(restarts, over["restarts"]), "jobs": over["jobs"]}
    return record


def stopped_record(cfg, run_id: str, stage: str, signal_name: str) -> dict[str, Any]:
    """The record of a run stopped before its training loop (``status: preempted``): what it is and
    where it stopped; nothing measured yet. Readers treat it as unfinished, like any non-completed run."""
    return {
        "schema_version": SCHEMA_VERSION,
        "status": "preempted",
        "run_id": run_id,
        "stopped": {"stage": stage, "signal": signal_name},
        "method": {"name": cfg.method.name, "source": METHODS.entry(cfg.method.name).source},
        "method_code": method_code(cfg.method.name).to_dict(),
        "arch": cfg.model.arch,
        "metrics": {},
        "selection": {"split": "none", "rule": "run preempted"},
        "epochs": cfg.train.epochs,
        "seed": cfg.train.seed,
        "config": cfg.to_dict(),
        "git": git_info(),
        "packages": package_versions(),
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
