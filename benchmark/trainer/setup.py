"""A run's set-up as values: everything the trainer builds before its first step, built once.

The trainer builds a run in three stages, each a frozen value, so that a stop signal during one of them is
named by its stage (``signals.py``) and a subclass can extend one stage without knowing the others:

- ``Runtime`` (``build_runtime``): where and how this process computes -- device, process group, whether it
  shows progress, the metrics log, the step settings (autocast, label smoothing, clipping), the grad scaler;
- ``RunData`` (``build_data``): the loaded data set, its train/eval/test loaders, the steps of an epoch;
- ``BuiltModel`` (``build_model``): the method, its code as this process loaded it, the build request (with
  the artifacts of its phases), the parameter report, the model on its device, the roles exempt from weight
  decay, the learning-rate schedule.

``TrainingSetup`` joins them with the optimizer and ``net`` (the model, or its DDP / compiled wrapper, which
trains and evaluates). Nothing in it is reassigned while the run trains: the loop's progress is
``TrainState`` (``state.py``), the only mutable state of a run. The model's *weights* train, of course, and
a method that changes the parameter set (SuperWeights' coefficient unsharing) gets a new ``TrainingSetup``
from ``rebuilt``: the same model, a new optimizer (momenta kept), a new ``net``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from ..accounting import ParamReport, param_report
from ..config import Config
from ..contract import BuildRequest, Method, NPASModel
from ..data import DataBundle, Loader, load_data, make_loader
from ..errors import ConfigError
from ..experiment import Experiment
from ..factory import build_checked
from ..method_code import method_code
from ..plugins import create_method
from .distributed import DistInfo, init_distributed
from .environment import resolve_device, seed_everything
from .metrics import JsonLines
from .optim import rebuild_optimizer
from .phase import PhaseContext, run_phases
from .schedule import LRSchedule
from .step import StepSettings, grad_scaler_for
from .tensorboard import event_log


@dataclass(frozen=True)
class Runtime:
    """Where and how this process computes."""

    device: torch.device
    dist: DistInfo  # this process's place in the process group (one process: a disabled DistInfo)
    progress: bool  # progress bars and lines (rank 0 only)
    log: JsonLines  # metrics.jsonl (written by rank 0), with its TensorBoard listener
    step_settings: StepSettings
    scaler: torch.amp.GradScaler


@dataclass(frozen=True)
class RunData:
    """The data set and the loaders that feed the run."""

    bundle: DataBundle
    train: Loader
    eval: Loader
    test: Loader
    steps_per_epoch: int  # train.max_steps_per_epoch, or the train loader's length


@dataclass(frozen=True)
class BuiltModel:
    """The method and the model it built for this run's request."""

    method: Method
    method_code: dict[str, Any]  # the method's files as this process loaded them (into the record)
    request: BuildRequest  # with the artifacts of the method's phases
    report: ParamReport
    model: NPASModel  # on the run's device (channels_last when asked)
    exempt: frozenset[str]  # parameter roles without weight decay
    schedule: LRSchedule
    wants_after_backward: bool


@dataclass(frozen=True)
class TrainingSetup:
    """One run, set up: the three stages, the optimizer and the view of the model that trains."""

    runtime: Runtime
    data: RunData
    built: BuiltModel
    optimizer: torch.optim.Optimizer
    net: Any  # the model, or its DDP / compiled wrapper (called like the model)

    @property
    def model(self) -> NPASModel:
        return self.built.model

    @property
    def method(self) -> Method:
        return self.built.method

    @property
    def device(self) -> torch.device:
        return self.runtime.device

    @property
    def dist(self) -> DistInfo:
        return self.runtime.dist

    def rewrapped(self, net: Any) -> "TrainingSetup":
        """The same set-up with another view of the model (after restoring the selected weights)."""
        return dataclasses.replace(self, net=net)

    def rebuilt(self, cfg: Config, wrap: Any) -> "TrainingSetup":
        """The method changed the parameter set: the model back on its device and layout, a new optimizer
        (keeping momenta), re-wrapped by ``wrap(model, runtime)``."""
        model = place(self.model, self.device, cfg.train.channels_last)
        optimizer = rebuild_optimizer(self.optimizer, model, cfg.optim, self.built.exempt)
        return dataclasses.replace(self, optimizer=optimizer, net=wrap(model, self.runtime))


def place(model: NPASModel, device: torch.device, channels_last: bool) -> NPASModel:
    """``model`` on ``device`` (and in channels_last when asked): the same module, moved in place."""
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def build_runtime(cfg: Config, metrics_path: Path, run_dir: Path) -> Runtime:
    """Threads, device, process group (torchrun's), determinism, the metrics log and the step settings."""
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    device = resolve_device(cfg.train.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist = init_distributed(device.type)
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    log = JsonLines(metrics_path, enabled=dist.is_main,
                    listener=event_log(cfg.run.tensorboard, run_dir, enabled=dist.is_main))
    return Runtime(device=device, dist=dist, progress=cfg.run.progress and dist.is_main, log=log,
                   step_settings=StepSettings.from_config(cfg, device), scaler=grad_scaler_for(cfg, device))


def build_data(cfg: Config, runtime: Runtime) -> RunData:
    """Load the data and make this rank's loaders; refuses a batch larger than the training set."""
    # data.pipeline picks the loaders: memory (BatchLoader, exact resume), ffcv (FFCVLoader) or torchvision
    # (TorchvisionLoader); "auto" is resolved (and logged) by load_data. All offer the data.Loader interface.
    bundle = load_data(cfg.data)
    common = dict(device=runtime.device, channels_last=cfg.train.channels_last, rank=runtime.dist.rank,
                  world_size=runtime.dist.world_size)
    train = make_loader(bundle, "train", cfg.train.batch_size, cfg.data, seed=cfg.train.seed,
                        drop_last=cfg.train.drop_last, **common)
    evaluation = make_loader(bundle, "eval", cfg.train.eval_batch_size, cfg.data, **common)
    test = make_loader(bundle, "test", cfg.train.eval_batch_size, cfg.data, **common)
    if runtime.progress and bundle.pipeline != "memory":
        tqdm.write(f"data pipeline: {train!r}")
    if len(train) == 0:
        raise ConfigError(
            f"train.batch_size: {cfg.train.batch_size} is larger than the training set of this rank "
            f"({train.num_examples} examples) with drop_last; lower it or set train.drop_last=false."
        )
    n = len(train)
    steps = min(n, cfg.train.max_steps_per_epoch) if cfg.train.max_steps_per_epoch else n
    return RunData(bundle=bundle, train=train, eval=evaluation, test=test, steps_per_epoch=steps)


def build_model(experiment: Experiment, runtime: Runtime, data: RunData, run_dir: Path) -> BuiltModel:
    """The method, its phases (a search reuses a finished artifact), the model checked against the budget."""
    cfg = experiment.config
    method: Method = create_method(cfg.method.name, cfg.method.options)
    code = method_code(cfg.method.name).to_dict()  # the files as this process loaded them
    bundle = data.bundle
    request = experiment.request(num_classes=bundle.num_classes, image_size=bundle.input_shape[1])
    ctx = PhaseContext(cfg=cfg, data=bundle, device=runtime.device, run_dir=run_dir, request=request,
                       run_id=experiment.run_id, progress=runtime.progress, dist=runtime.dist)
    artifacts = run_phases(method, request, ctx, runtime.dist)
    method.context = ctx  # epoch hooks that need the run's data/device (e.g. SuperWeights' unsharing)
    request = dataclasses.replace(request, artifacts=artifacts)
    seed_everything(cfg.train.seed)  # model init independent of what the phases consumed
    model = build_checked(method, request)
    report = param_report(model, tuple(bundle.input_shape), experiment.budget)
    return BuiltModel(method=method, method_code=code, request=request, report=report,
                      model=place(model, runtime.device, cfg.train.channels_last),
                      exempt=frozenset(method.no_weight_decay_roles()),
                      schedule=LRSchedule.from_config(cfg.optim, cfg.train.epochs, data.steps_per_epoch),
                      wants_after_backward=type(method).wants_after_backward())


def wrap(model: NPASModel, runtime: Runtime, compile_model: bool) -> Any:
    """The view of ``model`` that trains and evaluates: DDP (several processes), then ``torch.compile``."""
    net: Any = model
    if runtime.dist.enabled:
        ids = [runtime.device.index] if runtime.device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(net, device_ids=ids)
    if compile_model:
        net = torch.compile(net)
    return net
