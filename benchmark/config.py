"""Experiment configuration: typed sections, TOML files, dotted ``section.key=value`` overrides.

One config file per experiment (ffcv-imagenet style); the run folder keeps the resolved config and
its hash. The hash (the run id, ``experiment.run_id``) is taken over the *resolved* config (method
options with defaults filled in, the budget as an integer) and covers everything that can change
results and nothing that cannot (paths, worker/thread counts, device choice, progress, the run
section), so a resumed or re-submitted run can prove it is the same experiment.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

from .data.config import DataConfig
from .errors import ConfigError
from .options import build_dataclass, coerce, to_dict


@dataclass(frozen=True)
class MethodConfig:
    name: str = "unshared"  # a registered method (`npas methods`), in-tree or a plugin
    options: dict = field(default_factory=dict)  # the method's options, method.options.<name>


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "wrn-16-1"  # a registered architecture (`npas archs`), e.g. wrn-28-10, resnet50
    # e.g. "1.5M", "500k", 1000000, "10%" (of the unshared network's unique parameters);
    # "full" or left out = the method's natural size. Resolved to an integer count before the run id is taken.
    budget: int | str | None = None
    budget_mode: str = "total"  # "total" (unique trainable params) or a method's official knob


@dataclass(frozen=True)
class OptimConfig:
    # "sgd" (the WRN/ResNet/DenseNet papers': momentum, Nesterov, L2 decay) or "adamw" (ViT/DeiT: Adam with weight
    # decay decoupled from the gradient, Loshchilov & Hutter 2019; momentum and nesterov are then unused)
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.1  # peak learning rate
    momentum: float = 0.9  # SGD momentum; 0 = plain SGD
    nesterov: bool = True  # Nesterov momentum
    betas: tuple[float, ...] = (0.9, 0.999)  # AdamW's (beta1, beta2)
    eps: float = 1e-8  # AdamW's denominator term
    weight_decay: float = 5e-4  # weight decay (SGD: L2; AdamW: decoupled); roles in no_decay_roles (and the method's) are exempt
    # learning-rate schedule after the warm-up; "exponential": times gammas[0] at every epoch boundary (torchvision's
    # StepLR with step_size 1, the MobileNetV2 reference recipe)
    schedule: Literal["step", "cosine", "constant", "exponential"] = "step"
    milestones: tuple[float, ...] = (60, 120, 160)  # epochs (or fractions of training, see milestones_unit)
    gammas: tuple[float, ...] = (0.2, 0.2, 0.2)  # the LR is multiplied by gammas[i] at milestones[i] (step)
    milestones_unit: Literal["epoch", "fraction"] = "epoch"  # milestones in epochs, or fractions of training
    warmup_epochs: float = 0.0  # linear warm-up length in epochs (per step); 0 = none
    warmup_start_factor: float = 0.1  # the warm-up starts at this fraction of lr
    label_smoothing: float = 0.0  # cross-entropy label smoothing in [0, 1)
    grad_clip: float = 0.0  # max global grad norm; 0 = off
    no_decay_roles: tuple[str, ...] = ()  # extra roles exempt from weight decay (the method adds its own); "head_bias": the classifier's bias

    def __post_init__(self) -> None:
        if self.schedule == "step" and len(self.milestones) != len(self.gammas):
            raise ConfigError(
                f"optim.gammas: need one gamma per milestone ({len(self.milestones)} milestones, "
                f"{len(self.gammas)} gammas)."
            )
        if self.schedule == "exponential" and len(self.gammas) != 1:
            raise ConfigError(f"optim.gammas: the exponential schedule takes one per-epoch factor, e.g. gammas = [0.98], "
                              f"got {list(self.gammas)}.")
        if any(b <= a for a, b in zip(self.milestones, self.milestones[1:])):
            raise ConfigError(f"optim.milestones: must be strictly increasing, got {list(self.milestones)}.")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"optim.lr: must be a positive finite number, got {self.lr}.")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"optim.momentum: must be in [0, 1) (0 = plain SGD), got {self.momentum}.")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(f"optim.weight_decay: must be >= 0 (0 = off), got {self.weight_decay}.")
        if not (math.isfinite(self.grad_clip) and self.grad_clip >= 0):
            raise ConfigError(f"optim.grad_clip: a max gradient norm >= 0 (0 = off), got {self.grad_clip}.")
        if not (math.isfinite(self.warmup_epochs) and self.warmup_epochs >= 0):
            raise ConfigError(f"optim.warmup_epochs: must be >= 0 (0 = no warm-up), got {self.warmup_epochs}.")
        if not 0 < self.warmup_start_factor <= 1:
            raise ConfigError(f"optim.warmup_start_factor: must be in (0, 1], got {self.warmup_start_factor}.")
        if any(not (math.isfinite(m) and m >= 0) for m in self.milestones):
            raise ConfigError(f"optim.milestones: must be >= 0, got {list(self.milestones)}.")
        if any(not (math.isfinite(g) and g > 0) for g in self.gammas):
            raise ConfigError(f"optim.gammas: LR factors must be positive, got {list(self.gammas)}.")
        if len(self.betas) != 2 or not all(math.isfinite(b) and 0 <= b < 1 for b in self.betas):
            raise ConfigError(f"optim.betas: two numbers in [0, 1) (AdamW's beta1, beta2), got {list(self.betas)}.")
        if not (math.isfinite(self.eps) and self.eps > 0):
            raise ConfigError(f"optim.eps: must be a positive number (AdamW's denominator term), got {self.eps}.")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"optim.label_smoothing: must be in [0, 1), got {self.label_smoothing}.")
        from .accounting import ROLES

        bad = [r for r in self.no_decay_roles if r not in (*ROLES, "head_bias")]
        if bad:
            raise ConfigError(f"optim.no_decay_roles: unknown role(s) {bad}; roles are {', '.join(ROLES)}, and "
                              "head_bias (the classifier's bias).")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 200  # training epochs
    batch_size: int = 128  # training batch size (over all DDP ranks)
    eval_batch_size: int = 500  # evaluation batch size
    seed: int = 0  # seeds the model init, data order and augmentation (a grid's seeds axis)
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    amp: bool = False  # autocast (bf16 by default) on CPU and GPU
    amp_dtype: Literal["bfloat16", "float16"] = "bfloat16"  # autocast dtype (float16 adds a grad scaler)
    channels_last: bool = False  # NHWC memory format for convs (faster with AMP on GPUs)
    compile: bool = False  # torch.compile the model
    drop_last: bool = True  # drop the last incomplete training batch
    max_steps_per_epoch: int = 0  # 0 = full epochs; > 0 truncates each epoch (quick runs, tests)
    eval_every: int = 1  # evaluate every N epochs (and always after the last)
    threads: int = 0  # intra-op threads; 0 = leave torch's default
    deterministic: bool = False  # torch.use_deterministic_algorithms (GPU); CPU runs are reproducible anyway

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size", "eval_every"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"train.{name}: must be a positive integer, got {getattr(self, name)}.")
        if self.max_steps_per_epoch < 0:
            raise ConfigError("train.max_steps_per_epoch: must be >= 0 (0 = full epochs).")
        if self.threads < 0:
            raise ConfigError(f"train.threads: must be >= 0 (0 = torch's default), got {self.threads}.")


@dataclass(frozen=True)
class RunConfig:
    out: str = "runs/default"  # the run folder (config, metrics.jsonl, checkpoints, result.json); --out
    resume: str = "auto"  # "auto" (newest valid checkpoint), "never", or a checkpoint path
    progress: bool = True  # progress bars and lines (--no-progress)
    keep_checkpoints: int = 2  # epoch checkpoints kept (the newest is what a run resumes from)
    name: str = ""  # a label for the run (a grid sets the variant's label); not part of the run id
    # a folder of phase artifacts shared between runs (a grid's <results>/phases): a phase whose method
    # declares its inputs (Method.phase_inputs) is read from here when present, and stored here otherwise
    phase_dir: str = ""
    # TensorBoard event files in <run folder>/tensorboard (trainer/tensorboard.py): "auto" = when the
    # tensorboard package is importable, "on" = required (refused up front without it), "off"
    tensorboard: Literal["auto", "on", "off"] = "auto"

    def __post_init__(self) -> None:
        if self.keep_checkpoints < 1:
            raise ConfigError(f"run.keep_checkpoints: must be >= 1 (the newest checkpoint is what a run resumes "
                              f"from), got {self.keep_checkpoints}.")
        if not self.out.strip():
            raise ConfigError("run.out: empty; give the run folder, e.g. --out runs/my-run.")


@dataclass(frozen=True)
class Config:
    method: MethodConfig = field(default_factory=MethodConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)

    # -- (de)serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def to_toml(self) -> str:
        import tomli_w

        def clean(v: Any) -> Any:
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items() if x is not None}
            if isinstance(v, list):
                return [clean(x) for x in v]
            return v

        return tomli_w.dumps(clean(self.to_dict()))


SECTIONS = {f.name: f.type for f in dataclasses.fields(Config)}
# the dataclass of every section, in the order `npas config` lists them
SECTION_TYPES: dict[str, type] = {"method": MethodConfig, "model": ModelConfig, "data": DataConfig,
                                  "optim": OptimConfig, "train": TrainConfig, "run": RunConfig}


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    if parts[0] not in SECTIONS:
        raise ConfigError(f"unknown config section in {key!r}; sections are {', '.join(SECTIONS)}.")
    if len(parts) < 2:
        raise ConfigError(f"override {key!r}: use section.key=value, e.g. train.epochs=10.")
    node = tree.setdefault(parts[0], {})
    if parts[0] == "method" and parts[1] == "options" and len(parts) > 2:
        node.setdefault("options", {})[".".join(parts[2:])] = value
        return
    for p in parts[1:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value


def build_config(tree: Mapping[str, Any] | None = None, overrides: Mapping[str, Any] | None = None) -> Config:
    """Config from a nested mapping (a parsed TOML file) plus dotted overrides (strings are coerced)."""
    merged: dict[str, Any] = json.loads(json.dumps(dict(tree or {}), default=list))
    unknown = sorted(set(merged) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"unknown config section(s) {unknown}; sections are {', '.join(SECTIONS)}.")
    for key, value in (overrides or {}).items():
        _set_dotted(merged, key, value)
    sections: dict[str, Any] = {}
    for name in SECTIONS:
        cls = SECTION_TYPES[name]
        raw = merged.get(name, {})
        if not isinstance(raw, dict):
            raise ConfigError(f"config section {name!r} must be a table, got {raw!r}.")
        sections[name] = build_dataclass(cls, raw, prefix=name)
    return Config(**sections)


def load_config(path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> Config:
    tree: dict[str, Any] = {}
    if path is not None:
        from .reading import read_toml_text

        tree, _ = read_toml_text(path, "--config")
    return build_config(tree, overrides)


__all__ = ["Config", "MethodConfig", "ModelConfig", "OptimConfig", "TrainConfig", "RunConfig", "DataConfig",
           "build_config", "load_config", "coerce"]
