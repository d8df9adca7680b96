"""The common trainer: every method trains through this one loop.

Hot path per step: forward (all members), one cross-entropy over members, backward, optional clip,
SGD step, a learning rate computed from progress. Everything else (evaluation, checkpoints, logs)
happens at epoch boundaries or on a preemption request, so the loop adds almost nothing to a bare
PyTorch loop (``npasbench.perf.trainer_overhead`` measures it).

Guarantees:
- a seeded CPU run is reproducible, and a run killed at any point and resumed from its newest
  checkpoint ends with the same weights and metrics as an uninterrupted run (data order and
  augmentation are functions of (seed, epoch, batch); RNG states are checkpointed);
- SIGTERM/SIGUSR1/SIGUSR2 in the loop -> checkpoint at the next step boundary, exit code ``EXIT_PREEMPTED``;
  before the loop (data, model, phases) -> a clean stop with a ``preempted`` record, the same exit code;
- a non-finite loss stops the run with status ``diverged`` (exit code ``EXIT_DIVERGED``);
- every run leaves ``result.json`` (schema in ``record.py``), ``metrics.jsonl`` and its resolved
  config in the run folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from ..atomic import write_text
from ..config import Config
from ..contract import Method, NPASModel
from ..data import DataBundle, Loader, load_data, make_loader
from ..errors import ConfigError
from ..experiment import Experiment, resolve
from ..factory import build_checked
from ..accounting import param_report
from ..method_code import method_code
from ..plugins import create_method
from ..records import Record
from ..run_folder import RunFolder
from . import checkpoint as ckpt
from .environment import resolve_device, seed_everything
from .evaluation import evaluate, non_finite
from .folder import check_checkpoint_space, claim_run_folder, clear_stale_record, owned_by, record_stop
from .history import append_event, note_start, read_history
from .distributed import (DistInfo, all_gather_floats, all_reduce_sum, any_rank, barrier, broadcast_object, cleanup,
                          init_distributed)
from .metrics import JsonLines
from .tensorboard import event_log
from .optim import build_optimizer, rebuild_optimizer, set_lr
from .phase import PhaseContext, run_phases
from .record import RunSummary, build_record
from .schedule import LRSchedule
from .signals import PreemptionFlag, StopRequested, stop_signals_received
from .step import StepSettings, grad_scaler_for, train_step
from .state import TrainState, best_payload, checkpoint_payload, restore_model, restore_optimizer

EXIT_OK = 0
EXIT_DIVERGED = 4
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: "try again" -- the launcher requeues the run


@dataclass
class RunResult:
    status: str  # "completed" | "diverged" | "preempted"
    exit_code: int
    run_dir: Path
    record: Record | dict[str, Any]  # a final record (Record), a stop's plain record, or {} (nothing written)


class Trainer:
    """One run. ``lock=False`` when the caller already holds the run folder's lock (a grid task).

    The run's progress is one ``TrainState`` (``self.state``, what a checkpoint restores); the record is
    built from one ``RunSummary``. Public steps, which a subclass may extend (probes in the tests and the
    parity pipeline do): ``setup_data``, ``setup_model``, ``wrap_model`` (after restore and after every
    rebuild), ``train_step`` and ``finish``; call ``super()`` and keep their contracts.
    """

    def __init__(self, cfg: Config | Experiment, preemption: PreemptionFlag | None = None, lock: bool = True) -> None:
        # Resolve first: an unknown method/arch/data set/budget mode fails here, before anything is written,
        # and the run id (config hash) is the experiment's, however the config was spelled.
        self.experiment = resolve(cfg)  # once: an Experiment (e.g. from a grid task) is taken as it is
        self.cfg = cfg = self.experiment.config
        self.run_id = self.experiment.run_id
        self.run_dir = Path(cfg.run.out)
        self.folder = RunFolder(self.run_dir)  # every file of the run folder, by name
        # not `preemption or ...`: an unsignalled PreemptionFlag is falsy, so `or` would drop the caller's flag
        self.preemption = preemption if preemption is not None else PreemptionFlag()
        self.status = "running"
        self.lock = lock
        self.stage = "start"
        self._dist: DistInfo | None = None  # the process group, once _setup has joined it
        self.is_main = int(os.environ.get("RANK", "0")) == 0  # until the process group says

    @property
    def dist(self) -> DistInfo:
        """This process's place in the process group (one process: a disabled DistInfo); set by _setup."""
        if self._dist is None:
            raise RuntimeError("Trainer.dist is known once run() has set the run up")
        return self._dist

    # ------------------------------------------------------------------ set-up
    def _setup(self) -> None:
        cfg = self.cfg
        if cfg.train.threads > 0:
            torch.set_num_threads(cfg.train.threads)
        self.device = resolve_device(cfg.train.device)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self._dist = init_distributed(self.device.type)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        if cfg.train.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        self.is_main = self.dist.is_main
        self.progress = cfg.run.progress and self.is_main
        self.log = JsonLines(self.folder.metrics, enabled=self.is_main,
                             listener=event_log(cfg.run.tensorboard, self.run_dir, enabled=self.is_main))
        self.step_settings = StepSettings.from_config(cfg, self.device)
        self.scaler = grad_scaler_for(cfg, self.device)

    def setup_data(self) -> None:
        cfg = self.cfg
        # data.pipeline picks the loaders: memory (BatchLoader, exact resume), ffcv (FFCVLoader) or torchvision
        # (TorchvisionLoader); "auto" is resolved (and logged) by load_data. All offer the data.Loader interface.
        self.data: DataBundle = load_data(cfg.data)
        common = dict(device=self.device, channels_last=cfg.train.channels_last, rank=self.dist.rank,
                      world_size=self.dist.world_size)
        self.train_loader: Loader = make_loader(self.data, "train", cfg.train.batch_size, cfg.data, seed=cfg.train.seed,
                                                     drop_last=cfg.train.drop_last, **common)
        self.eval_loader: Loader = make_loader(self.data, "eval", cfg.train.eval_batch_size, cfg.data, **common)
        self.test_loader: Loader = make_loader(self.data, "test", cfg.train.eval_batch_size, cfg.data, **common)
        if self.progress and self.data.pipeline != "memory":
            tqdm.write(f"data pipeline: {self.train_loader!r}")
        if len(self.train_loader) == 0:
            raise ConfigError(
                f"train.batch_size: {cfg.train.batch_size} is larger than the training set of this rank "
                f"({self.train_loader.num_examples} examples) with drop_last; lower it or set train.drop_last=false."
            )
        n = len(self.train_loader)
        self.steps_per_epoch = min(n, cfg.train.max_steps_per_epoch) if cfg.train.max_steps_per_epoch else n

    def setup_model(self) -> None:
        cfg = self.cfg
        self.method: Method = create_method(cfg.method.name, cfg.method.options)
        self.method_code = method_code(cfg.method.name).to_dict()  # the files as this process loaded them
        budget = self.experiment.budget
        request = self.experiment.request(num_classes=self.data.num_classes, image_size=self.data.input_shape[1])
        ctx = PhaseContext(cfg=cfg, data=self.data, device=self.device, run_dir=self.run_dir, request=request,
                           run_id=self.run_id, progress=self.progress, dist=self.dist)
        artifacts = run_phases(self.method, request, ctx, self.dist)
        self.method.context = ctx  # epoch hooks that need the run's data/device (e.g. SuperWeights' unsharing)
        self.request = dataclasses.replace(request, artifacts=artifacts)
        seed_everything(cfg.train.seed)  # model init independent of what the phases consumed
        model = build_checked(self.method, self.request)
        self.report = param_report(model, tuple(self.data.input_shape), budget)
        self.model: NPASModel = model.to(self.device)
        if cfg.train.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.exempt = self.method.no_weight_decay_roles()
        self.schedule = LRSchedule.from_config(cfg.optim, cfg.train.epochs, self.steps_per_epoch)
        self.wants_after_backward = type(self.method).wants_after_backward()

    def _write_config(self) -> None:
        """The resolved config and its id, written once the run has been checked and set up."""
        if self.is_main:
            self._write_config_files()
        barrier(self.dist)

    def _write_config_files(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_text(self.folder.config_toml, self.cfg.to_toml())
        self.folder.write_config(self.cfg.to_dict(), self.run_id)

    def wrap_model(self) -> None:
        """(Re)build the view of the model that trains and evaluates (``self.net``): DDP and torch.compile wrappers."""
        net: Any = self.model  # the model, or its DDP / compiled wrapper (called like the model)
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            net = nn.parallel.DistributedDataParallel(net, device_ids=ids)
        if self.cfg.train.compile:
            net = torch.compile(net)
        self.net = net

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, epoch: int, batch: int) -> Path | None:
        acc = all_gather_floats([self.state.loss_sum, self.state.seen], self.dist)  # a collective: before the rank-0 branch
        path = None
        if self.is_main:
            progress = self.state.progress_payload(epoch, batch, acc, time.perf_counter() - self.t_start)
            payload = checkpoint_payload(progress, model=self.model, optimizer=self.optimizer,
                                         schedule=self.schedule, scaler=self.scaler, method=self.method,
                                         run_id=self.run_id, metrics_lines=self.log.lines)
            path = ckpt.save_checkpoint(self.folder.checkpoints, payload, self.cfg.run.keep_checkpoints)
        barrier(self.dist)
        return path

    def _restore(self, found: tuple[Path, dict[str, Any]] | None) -> tuple[int, int]:
        """Load ``found`` (from ``checkpoint.choose``) into the run state, model and optimizer; return (epoch, batch)."""
        if found is None:
            self.optimizer = build_optimizer(self.model, self.cfg.optim, self.exempt)
            self.log.truncate(0)
            return 0, 0
        path, payload = found
        restore_model(payload, self.model, self.method)
        self.model.to(self.device)
        self.optimizer = build_optimizer(self.model, self.cfg.optim, self.exempt)
        restore_optimizer(payload, self.optimizer, self.scaler)
        self.state = TrainState.from_payload(payload, str(path), self.dist.rank, self.dist.world_size)
        self.log.truncate(int(payload["metrics_lines"]))
        if self.is_main:
            append_event(self.run_dir, "resume", checkpoint=path.name, epoch=int(payload["epoch"]),
                         batch=int(payload["batch"]), step=int(payload["step"]), steps_per_epoch=self.steps_per_epoch)
        if self.progress:
            tqdm.write(f"resumed from {path} (epoch {payload['epoch']}, batch {payload['batch']})")
        return int(payload["epoch"]), int(payload["batch"])

    # ------------------------------------------------------------------ steps
    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One step (``step.train_step``: the same one every training phase uses); returns the detached loss."""
        after = (lambda: self.method.after_backward(self.model, self.state.step)) if self.wants_after_backward else None
        return train_step(self.net, self.model, self.optimizer, self.scaler, self.step_settings, x, y, after)

    def evaluate(self, loader: Loader, anytime: bool = False) -> dict[str, Any]:
        """Top-1/top-5 and loss of every member on ``loader`` (``evaluation.evaluate``), timed into the run state."""
        out, elapsed = evaluate(self.net, self.model, loader, self.step_settings.autocast, self.dist, self.device,
                                self.report.flops["per_member"] if anytime else None)
        self.state.add_eval_time(elapsed, out["examples"])
        return out

    # ------------------------------------------------------------------ main loop
    def run(self) -> RunResult:
        """Set up, train, write the record. The stop contract (``signals.py``) holds from the first line:
        SIGTERM/SIGUSR1/SIGUSR2 at any point ends the run resumably with ``EXIT_PREEMPTED``."""
        self.preemption.install(raising=True)
        try:
            with contextlib.ExitStack() as held:
                try:
                    return self._run(held)
                except StopRequested as stop:
                    return self._stopped(stop)
        finally:
            self.preemption.uninstall()
            if self._dist is not None:
                cleanup(self._dist)

    def _run(self, held: contextlib.ExitStack) -> RunResult:
        t_start = self.t_start = time.perf_counter()
        self.state = TrainState()  # replaced by the checkpoint's in _restore
        self.diverged_at: dict[str, Any] | None = None
        self.last_eval: tuple[int, dict[str, Any]] | None = None
        self.stage = "set-up"
        self._setup()
        self._claim_folder(held)
        self.stage = "checkpoint lookup"
        found = ckpt.choose(self.cfg.run.resume, self.folder.checkpoints, self.run_id)
        self._note_start()
        self.stage = "data"
        self.setup_data()
        self.stage = "model and phases"
        self.setup_model()
        self.stage = "restore"
        start_epoch, start_batch = self._restore(found)
        self._check_space()
        self._write_config()
        self.wrap_model()
        self.setup_s = time.perf_counter() - t_start  # this process: start of run() to its first training step
        self.stage = "training"
        self.preemption.arm()
        status = self._loop(start_epoch, start_batch)
        self.stage = "final evaluation"
        return self.finish(status, t_start)

    def _claim_folder(self, held: contextlib.ExitStack) -> None:
        """Rank 0 locks the run folder and probes it (``folder.claim_run_folder``); every rank gets the verdict."""
        error: Exception | None = None
        if self.is_main:
            try:
                claim_run_folder(self.run_dir, self.cfg.run.phase_dir, held if self.lock else None,
                                 on_locked=lambda: setattr(self, "claimed", True))
            except Exception as exc:  # noqa: BLE001 - re-raised on every rank below
                error = exc
        if self.dist.enabled:
            error = broadcast_object(error, self.dist)
        if error is not None:
            raise error

    def _note_start(self) -> None:
        """The folder is this run's (its checkpoints, if any, are this config's): say so in its history, and
        drop a stale stop record (a ``preempted`` result.json from an earlier stop would otherwise stand while
        this process trains, or after it is killed; the history keeps that stop)."""
        if self.is_main and owned_by(self.run_dir, self.run_id):
            note_start(self.run_dir)
            clear_stale_record(self.run_dir, self.run_id)

    def _check_space(self) -> None:
        """Refuse a disk that cannot take one more checkpoint (and best.pt): found now, not after an epoch."""
        if self.is_main:
            check_checkpoint_space(self.run_dir, self.model, self.cfg.optim.momentum > 0)

    def _stopped(self, stop: StopRequested) -> RunResult:
        """A stop signal before the training loop: nothing half-done is kept (every write is atomic, a
        phase's artifact appears only once it has finished), the folder says it was stopped
        (``folder.record_stop``), and the same command resumes."""
        self.preemption.arm()  # a second signal now only sets the flag
        name = str(stop).replace("stopped by ", "")
        record: dict[str, Any] = {}
        if self.is_main and getattr(self, "claimed", False):
            append_event(self.run_dir, "stop", stage=self.stage, signals=[name])
            record = record_stop(self.cfg, self.run_dir, self.run_id, self.stage, name, self._write_config_files)
        if self.is_main:
            print(f"run stopped by {name} during {self.stage}; resumable: run the same command again "
                  f"({self.run_dir})", file=sys.stderr)
        return RunResult("preempted", EXIT_PREEMPTED, self.run_dir, record)

    def _loop(self, start_epoch: int, start_batch: int) -> str:
        cfg = self.cfg
        epochs = range(start_epoch, cfg.train.epochs)
        ebar = tqdm(total=cfg.train.epochs, initial=start_epoch, desc="epochs", unit="ep", disable=not self.progress,
                    dynamic_ncols=True, leave=True)
        self.model.train()
        try:
            for epoch in epochs:
                if self.method.on_epoch_start(self.model, epoch):
                    self._rebuild()
                batch0 = start_batch if epoch == start_epoch else 0
                if batch0 == 0:
                    self.state.reset_epoch_loss()
                sbar = tqdm(total=self.steps_per_epoch, initial=batch0, desc=f"epoch {epoch + 1}", unit="step",
                            disable=not self.progress, leave=False, dynamic_ncols=True)
                t0 = time.perf_counter()
                images = 0
                b = batch0
                # stop the generator before it builds (and augments) a batch that is never used
                batches = itertools.islice(self.train_loader.epoch(epoch, batch0), max(0, self.steps_per_epoch - batch0))
                for b, (x, y) in enumerate(batches, start=batch0):
                    set_lr(self.optimizer, self.schedule.lr(epoch, b))
                    loss = self.train_step(x, y)
                    value = loss.item()
                    if not math.isfinite(value):
                        sbar.close()
                        self.diverged_at = {"epoch": epoch, "batch": b, "step": self.state.step, "loss": str(value)}
                        return "diverged"
                    self.state.loss_sum += value * y.shape[0]
                    self.state.seen += y.shape[0]
                    images += y.shape[0]
                    self.state.step += 1
                    sbar.update(1)
                    if self.state.step % 20 == 0:
                        sbar.set_postfix(loss=f"{value:.3f}", refresh=False)
                    # all ranks stop at the same step: a signal reaches them at different step boundaries,
                    # and a rank stopping alone would deadlock in the checkpoint barrier
                    if any_rank(bool(self.preemption), self.dist):
                        self.state.add_train_time(time.perf_counter() - t0, images * self.dist.world_size)
                        sbar.close()
                        saved = self.save_checkpoint(epoch, b + 1)
                        if self.is_main:
                            append_event(self.run_dir, "stop", stage="training", signals=_signal_names(self.preemption.signum),
                                         checkpoint=saved.name if saved else None, epoch=epoch, batch=b + 1,
                                         step=self.state.step, steps_per_epoch=self.steps_per_epoch)
                        return "preempted"
                sbar.close()
                self.state.add_train_time(time.perf_counter() - t0, images * self.dist.world_size)
                self._end_epoch(epoch)
                ebar.update(1)
        finally:
            ebar.close()
        return "completed"

    def _end_epoch(self, epoch: int) -> None:
        cfg = self.cfg
        sums = all_reduce_sum(torch.tensor([self.state.loss_sum, float(self.state.seen)], dtype=torch.float64), self.dist)
        loss = float(sums[0]) / max(float(sums[1]), 1.0)
        train = {"kind": "train", "epoch": epoch + 1, "step": self.state.step,
                 "loss": loss, "lr": self.schedule.lr(epoch, self.steps_per_epoch - 1)}
        self.log.write(train)
        metrics: dict[str, float] = {"train_loss": loss}
        if (epoch + 1) % cfg.train.eval_every == 0 or epoch + 1 == cfg.train.epochs:
            ev = self.evaluate(self.eval_loader)
            self.last_eval = (epoch + 1, ev)
            self.log.write({"kind": "eval", "epoch": epoch + 1, "step": self.state.step, "split": self.data.eval_split, **ev})
            metrics.update(eval_top1=ev["top1"], eval_loss=ev["loss"])
            if self.progress:
                tqdm.write(f"epoch {epoch + 1}: train loss {train['loss']:.4f}  {self.data.eval_split} top1 "
                           f"{ev['top1']:.2f}  top5 {ev['top5']:.2f}")
            if self.data.eval_split == "val" and ev["top1"] > self.state.best["top1"]:
                self.state.best = {"top1": ev["top1"], "epoch": epoch + 1}
                if self.is_main:
                    ckpt.save_best(self.run_dir, best_payload(self.model, self.method, epoch + 1, self.run_id))
        if self.method.on_epoch_end(self.model, epoch, metrics):
            self._rebuild()
        self.state.reset_epoch_loss()
        self.save_checkpoint(epoch + 1, 0)

    def _rebuild(self) -> None:
        """The method changed the parameter set: new optimizer (keeping momenta), re-wrap."""
        self.model.to(self.device)
        if self.cfg.train.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = rebuild_optimizer(self.optimizer, self.model, self.cfg.optim, self.exempt)
        self.wrap_model()

    # ------------------------------------------------------------------ the record
    def _summary(self) -> RunSummary:
        """What the record reports about this run, as one value (the record module reads nothing else)."""
        return RunSummary(
            cfg=self.cfg, run_id=self.run_id, method_name=self.method.name, method_code=self.method_code,
            members=list(self.model.member_names), method_info=self.method.record_info(self.model),
            dataset=self.data.describe(), synthetic=bool(self.data.synthetic),
            budget=self.request.budget.to_dict() if self.request.budget else None, params=self.report.to_dict(),
            steps=self.state.step, device=self.device, world_size=self.dist.world_size, timing=dict(self.state.timing),
            setup_s=self.setup_s, pipeline=self.train_loader.pipeline,
            artifacts=tuple(self.request.artifacts), resumed_from=self.state.resumed_from, diverged_at=self.diverged_at)

    def finish(self, status: str, t_start: float) -> RunResult:
        final: dict[str, Any] = {}
        selection: dict[str, Any]
        if status == "completed":
            best = self.state.best
            if self.data.eval_split == "val" and best["epoch"] > 0:
                weights = ckpt.load_best(self.run_dir, self.run_id) if self.is_main else None
                restore_model(broadcast_object(weights, self.dist), self.model, self.method)
                self.model.to(self.device)
                self.wrap_model()
                selection = {"split": "val", "metric": "top1", "epoch": best["epoch"], "val_top1": best["top1"]}
            else:
                selection = {"split": "none", "rule": "last epoch", "epoch": self.cfg.train.epochs}
            eval_is_test = self.data.eval_split == "test" and self.data.eval is self.data.test
            anytime = self.model.num_members > 1  # every member subset, ordered by inference FLOPs
            if anytime:
                final = self.evaluate(self.test_loader, anytime=True)
            elif eval_is_test and self.last_eval and self.last_eval[0] == self.cfg.train.epochs:
                final = dict(self.last_eval[1])  # the last epoch's eval already was the test split
            else:
                final = self.evaluate(self.test_loader)
            final["split"] = "test"
            bad = non_finite(self.model, final)
            if bad:  # weights or evaluation gone non-finite although the training loss stayed finite
                self.diverged_at = {"epoch": self.cfg.train.epochs, "step": self.state.step, "reason": bad}
                status = "diverged"
                selection = {"split": "none", "rule": "run diverged"}
            self.log.write({"kind": "final", "step": self.state.step, **final})
        else:
            selection = {"split": "none", "rule": f"run {status}"}
        wall = self.state.wall_before + (time.perf_counter() - t_start)
        if self.is_main and status != "preempted":  # a stop in training said so already, with its checkpoint
            append_event(self.run_dir, "end", status=status, step=self.state.step)
        history = read_history(self.run_dir) if self.is_main else []
        record = Record.of(build_record(self._summary(), status, final, selection, wall, history))
        if self.is_main:
            self.folder.write_result(record)
        code = {"completed": EXIT_OK, "diverged": EXIT_DIVERGED, "preempted": EXIT_PREEMPTED}[status]
        if self.progress and status != "completed":
            print(f"run {status}: see {self.folder.result}", file=sys.stderr)
        return RunResult(status, code, self.run_dir, record)


def _signal_names(flagged: int | None) -> list[str]:
    """Every stop signal this process received (a preemption may send TERM and USR2), else the flag's own."""
    import signal as _signal

    received = set(stop_signals_received()) or ({flagged} if flagged else set())
    return sorted(_signal.Signals(s).name for s in received)


def train(cfg: Config | Experiment, preemption: PreemptionFlag | None = None, lock: bool = True) -> RunResult:
    """Run one experiment. ``lock=False``: the caller holds the run folder's lock already (a grid task)."""
    return Trainer(cfg, preemption, lock).run()
