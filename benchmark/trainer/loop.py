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
import itertools
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..atomic import write_text
from ..config import Config
from ..contract import BuildRequest, Method, NPASModel
from ..data import Loader
from ..experiment import Experiment, resolve
from ..records import Record
from ..run_folder import RunFolder
from . import checkpoint as ckpt
from .evaluation import evaluate, non_finite
from .folder import check_checkpoint_space, claim_run_folder, clear_stale_record, owned_by, record_stop
from .history import append_event, note_start, read_history
from .distributed import (DistInfo, all_gather_floats, all_reduce_sum, any_rank, barrier, broadcast_object, cleanup,
                          is_main_process)
from .optim import build_optimizer, set_lr
from .record import build_record, RunSummary
from .setup import BuiltModel, RunData, Runtime, TrainingSetup, build_data, build_model, build_runtime, wrap
from .signals import PreemptionFlag, StopRequested, stop_signals_received
from .step import train_step
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

    The set-up is one value (``self.setup``, a ``setup.TrainingSetup``: device, data, loaders, model,
    optimizer, schedule), built before the first step; the run's progress is one ``TrainState``
    (``self.state``, what a checkpoint restores), the only state that changes while it trains; the record is
    built from one ``RunSummary``. Public steps, which a subclass may extend (probes in the tests and the parity
    pipeline do): ``setup_data`` (returns a ``RunData``), ``setup_model`` (a ``BuiltModel``), ``wrap_model``
    (the view that trains; after restore and after every rebuild), ``train_step`` and ``finish``; call
    ``super()`` and return what it returns.
    """

    def __init__(self, cfg: Config | Experiment, preemption: PreemptionFlag | None = None, lock: bool = True) -> None:
        # Resolve first: an unknown method/arch/data set/budget mode fails here, before anything is written,
        # and the run id is the experiment's, however the config was spelled.
        self.experiment = resolve(cfg)  # once: an Experiment (e.g. from a grid task) is taken as it is
        self.cfg = cfg = self.experiment.config
        self.run_id = self.experiment.run_id
        self.run_dir = Path(cfg.run.out)
        self.folder = RunFolder(self.run_dir)  # every file of the run folder, by name
        # not `preemption or ...`: an unsignalled PreemptionFlag is falsy, so `or` would drop the caller's flag
        self.preemption = preemption if preemption is not None else PreemptionFlag()
        self.lock = lock
        self.is_main = is_main_process()  # torchrun's rank 0, or the only process
        self.state = TrainState()
        self._setup: TrainingSetup | None = None  # built by run()

    # ------------------------------------------------------------------ the set-up, read-only
    @property
    def setup(self) -> TrainingSetup:
        if self._setup is None:
            raise RuntimeError("Trainer.setup is known once run() has set the run up")
        return self._setup

    @property
    def dist(self) -> DistInfo:
        return self.setup.dist

    @property
    def model(self) -> NPASModel:
        return self.setup.model

    @property
    def net(self) -> Any:
        return self.setup.net

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.setup.optimizer

    @property
    def scaler(self) -> torch.amp.GradScaler:
        return self.setup.runtime.scaler

    @property
    def method(self) -> Method:
        return self.setup.method

    @property
    def request(self) -> BuildRequest:
        return self.setup.built.request

    @property
    def steps_per_epoch(self) -> int:
        return self.setup.data.steps_per_epoch

    # ------------------------------------------------------------------ set-up, stage by stage
    def setup_data(self, runtime: Runtime) -> RunData:
        return build_data(self.cfg, runtime)

    def setup_model(self, runtime: Runtime, data: RunData) -> BuiltModel:
        return build_model(self.experiment, runtime, data, self.run_dir)

    def wrap_model(self, model: NPASModel, runtime: Runtime) -> Any:
        """The view of the model that trains and evaluates (``setup.wrap``: DDP and torch.compile wrappers)."""
        return wrap(model, runtime, self.cfg.train.compile)

    def _build(self, held: contextlib.ExitStack) -> tuple[TrainingSetup, int, int]:
        """Every stage of the set-up, in order (``state.stage`` names the one running, for the stop contract);
        returns the set-up and where training starts (epoch, batch)."""
        self.state.stage = "set-up"
        runtime = build_runtime(self.cfg, self.folder.metrics, self.run_dir)
        held.callback(cleanup, runtime.dist)
        self._claim_folder(held, runtime.dist)
        self.state.stage = "checkpoint lookup"
        found = ckpt.choose(self.cfg.run.resume, self.folder.checkpoints, self.run_id)
        self._note_start()
        self.state.stage = "data"
        data = self.setup_data(runtime)
        self.state.stage = "model and phases"
        built = self.setup_model(runtime, data)
        self.state.stage = "restore"
        optimizer, (start_epoch, start_batch) = self._restore(found, runtime, data, built)
        self._check_space(built.model)
        self._write_config(runtime.dist)
        setup = TrainingSetup(runtime=runtime, data=data, built=built, optimizer=optimizer,
                              net=self.wrap_model(built.model, runtime))
        return setup, start_epoch, start_batch

    def _write_config(self, dist: DistInfo) -> None:
        """The resolved config and its id, written once the run has been checked and set up."""
        if self.is_main:
            self._write_config_files()
        barrier(dist)

    def _write_config_files(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_text(self.folder.config_toml, self.cfg.to_toml())
        self.folder.write_config(self.cfg.to_dict(), self.run_id)

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, epoch: int, batch: int) -> Path | None:
        s = self.setup
        acc = all_gather_floats([self.state.loss_sum, self.state.seen], s.dist)  # a collective: before the rank-0 branch
        path = None
        if self.is_main:
            progress = self.state.progress_payload(epoch, batch, acc, time.perf_counter() - self.state.started)
            payload = checkpoint_payload(progress, model=s.model, optimizer=s.optimizer,
                                         schedule=s.built.schedule, scaler=s.runtime.scaler, method=s.method,
                                         run_id=self.run_id, metrics_lines=s.runtime.log.lines)
            path = ckpt.save_checkpoint(self.folder.checkpoints, payload, self.cfg.run.keep_checkpoints)
        barrier(s.dist)
        return path

    def _restore(self, found: tuple[Path, dict[str, Any]] | None, runtime: Runtime, data: RunData,
                 built: BuiltModel) -> tuple[torch.optim.Optimizer, tuple[int, int]]:
        """Load ``found`` (from ``checkpoint.choose``) into the run state and the model; return the optimizer
        (restored too) and where training starts (epoch, batch)."""
        model = built.model
        if found is None:
            runtime.log.truncate(0)
            return build_optimizer(model, self.cfg.optim, built.exempt), (0, 0)
        path, payload = found
        restore_model(payload, model, built.method)
        model.to(runtime.device)
        optimizer = build_optimizer(model, self.cfg.optim, built.exempt)
        restore_optimizer(payload, optimizer, runtime.scaler)
        self.state.resume(payload, str(path), runtime.dist.rank, runtime.dist.world_size)
        runtime.log.truncate(int(payload["metrics_lines"]))
        if self.is_main:
            append_event(self.run_dir, "resume", checkpoint=path.name, epoch=int(payload["epoch"]),
                         batch=int(payload["batch"]), step=int(payload["step"]), steps_per_epoch=data.steps_per_epoch)
        if runtime.progress:
            tqdm.write(f"resumed from {path} (epoch {payload['epoch']}, batch {payload['batch']})")
        return optimizer, (int(payload["epoch"]), int(payload["batch"]))

    # ------------------------------------------------------------------ steps
    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One step (``step.train_step``: the same one every training phase uses); returns the detached loss."""
        s = self.setup
        after = (lambda: s.method.after_backward(s.model, self.state.step)) if s.built.wants_after_backward else None
        return train_step(s.net, s.model, s.optimizer, s.runtime.scaler, s.runtime.step_settings, x, y, after)

    def evaluate(self, loader: Loader, anytime: bool = False) -> dict[str, Any]:
        """Top-1/top-5 and loss of every member on ``loader`` (``evaluation.evaluate``), timed into the run state."""
        s = self.setup
        out, elapsed = evaluate(s.net, s.model, loader, s.runtime.step_settings.autocast, s.dist, s.device,
                                s.built.report.flops["per_member"] if anytime else None)
        self.state.add_eval_time(elapsed, out["examples"])
        return out

    # ------------------------------------------------------------------ main loop
    def run(self) -> RunResult:
        """Set up, train, write the record. The stop contract (``signals.py``) holds from the first line:
        SIGTERM/SIGUSR1/SIGUSR2 at any point ends the run resumably with ``EXIT_PREEMPTED``."""
        self.preemption.install(raising=True)
        try:
            with contextlib.ExitStack() as held:  # the folder's lock and the process group, released on the way out
                try:
                    return self._run(held)
                except StopRequested as stop:
                    return self._stopped(stop)
        finally:
            self.preemption.uninstall()

    def _run(self, held: contextlib.ExitStack) -> RunResult:
        self.state.started = time.perf_counter()
        self._setup, start_epoch, start_batch = self._build(held)
        self.state.setup_s = time.perf_counter() - self.state.started  # this process: start of run() to its first step
        self.state.stage = "training"
        self.preemption.arm()
        status = self._loop(start_epoch, start_batch)
        self.state.stage = "final evaluation"
        return self.finish(status)

    def _claim_folder(self, held: contextlib.ExitStack, dist: DistInfo) -> None:
        """Rank 0 locks the run folder and probes it (``folder.claim_run_folder``); every rank gets the verdict."""
        error: Exception | None = None
        if self.is_main:
            try:
                claim_run_folder(self.run_dir, self.cfg.run.phase_dir, held if self.lock else None,
                                 on_locked=lambda: setattr(self.state, "claimed", True))
            except Exception as exc:  # noqa: BLE001 - re-raised on every rank below
                error = exc
        if dist.enabled:
            error = broadcast_object(error, dist)
        if error is not None:
            raise error

    def _note_start(self) -> None:
        """The folder is this run's (its checkpoints, if any, are this config's): say so in its history, and
        drop a stale stop record (a ``preempted`` result.json from an earlier stop would otherwise stand while
        this process trains, or after it is killed; the history keeps that stop)."""
        if self.is_main and owned_by(self.run_dir, self.run_id):
            note_start(self.run_dir)
            clear_stale_record(self.run_dir, self.run_id)

    def _check_space(self, model: NPASModel) -> None:
        """Refuse a disk that cannot take one more checkpoint (and best.pt): found now, not after an epoch."""
        if self.is_main:
            check_checkpoint_space(self.run_dir, model, self.cfg.optim.momentum > 0)

    def _stopped(self, stop: StopRequested) -> RunResult:
        """A stop signal before the training loop: nothing half-done is kept (every write is atomic, a
        phase's artifact appears only once it has finished), the folder says it was stopped
        (``folder.record_stop``), and the same command resumes."""
        self.preemption.arm()  # a second signal now only sets the flag
        name = str(stop).replace("stopped by ", "")
        stage = self.state.stage
        record: dict[str, Any] = {}
        if self.is_main and self.state.claimed:
            append_event(self.run_dir, "stop", stage=stage, signals=[name])
            record = record_stop(self.cfg, self.run_dir, self.run_id, stage, name, self._write_config_files)
        if self.is_main:
            print(f"run stopped by {name} during {stage}; resumable: run the same command again "
                  f"({self.run_dir})", file=sys.stderr)
        return RunResult("preempted", EXIT_PREEMPTED, self.run_dir, record)

    def _loop(self, start_epoch: int, start_batch: int) -> str:
        cfg, state = self.cfg, self.state
        data, dist, progress = self.setup.data, self.setup.dist, self.setup.runtime.progress
        steps_per_epoch = data.steps_per_epoch
        epochs = range(start_epoch, cfg.train.epochs)
        ebar = tqdm(total=cfg.train.epochs, initial=start_epoch, desc="epochs", unit="ep", disable=not progress,
                    dynamic_ncols=True, leave=True)
        self.model.train()
        try:
            for epoch in epochs:
                if self.method.on_epoch_start(self.model, epoch):
                    self._rebuild()
                batch0 = start_batch if epoch == start_epoch else 0
                if batch0 == 0:
                    state.reset_epoch_loss()
                sbar = tqdm(total=steps_per_epoch, initial=batch0, desc=f"epoch {epoch + 1}", unit="step",
                            disable=not progress, leave=False, dynamic_ncols=True)
                t0 = time.perf_counter()
                images = 0
                b = batch0
                schedule = self.setup.built.schedule
                # stop the generator before it builds (and augments) a batch that is never used
                batches = itertools.islice(data.train.epoch(epoch, batch0), max(0, steps_per_epoch - batch0))
                for b, (x, y) in enumerate(batches, start=batch0):
                    set_lr(self.optimizer, schedule.lr(epoch, b))
                    loss = self.train_step(x, y)
                    value = loss.item()
                    if not math.isfinite(value):
                        sbar.close()
                        state.diverged_at = {"epoch": epoch, "batch": b, "step": state.step, "loss": str(value)}
                        return "diverged"
                    state.loss_sum += value * y.shape[0]
                    state.seen += y.shape[0]
                    images += y.shape[0]
                    state.step += 1
                    sbar.update(1)
                    if state.step % 20 == 0:
                        sbar.set_postfix(loss=f"{value:.3f}", refresh=False)
                    # all ranks stop at the same step: a signal reaches them at different step boundaries,
                    # and a rank stopping alone would deadlock in the checkpoint barrier
                    if any_rank(bool(self.preemption), dist):
                        state.add_train_time(time.perf_counter() - t0, images * dist.world_size)
                        sbar.close()
                        saved = self.save_checkpoint(epoch, b + 1)
                        if self.is_main:
                            append_event(self.run_dir, "stop", stage="training", signals=_signal_names(self.preemption.signum),
                                         checkpoint=saved.name if saved else None, epoch=epoch, batch=b + 1,
                                         step=state.step, steps_per_epoch=steps_per_epoch)
                        return "preempted"
                sbar.close()
                state.add_train_time(time.perf_counter() - t0, images * dist.world_size)
                self._end_epoch(epoch)
                ebar.update(1)
        finally:
            ebar.close()
        return "completed"

    def _end_epoch(self, epoch: int) -> None:
        cfg, state, s = self.cfg, self.state, self.setup
        bundle = s.data.bundle
        sums = all_reduce_sum(torch.tensor([state.loss_sum, float(state.seen)], dtype=torch.float64), s.dist)
        loss = float(sums[0]) / max(float(sums[1]), 1.0)
        train = {"kind": "train", "epoch": epoch + 1, "step": state.step,
                 "loss": loss, "lr": s.built.schedule.lr(epoch, s.data.steps_per_epoch - 1)}
        s.runtime.log.write(train)
        metrics: dict[str, float] = {"train_loss": loss}
        if (epoch + 1) % cfg.train.eval_every == 0 or epoch + 1 == cfg.train.epochs:
            ev = self.evaluate(s.data.eval)
            state.last_eval = (epoch + 1, ev)
            s.runtime.log.write({"kind": "eval", "epoch": epoch + 1, "step": state.step, "split": bundle.eval_split, **ev})
            metrics.update(eval_top1=ev["top1"], eval_loss=ev["loss"])
            if s.runtime.progress:
                tqdm.write(f"epoch {epoch + 1}: train loss {train['loss']:.4f}  {bundle.eval_split} top1 "
                           f"{ev['top1']:.2f}  top5 {ev['top5']:.2f}")
            if bundle.eval_split == "val" and ev["top1"] > state.best["top1"]:
                state.best = {"top1": ev["top1"], "epoch": epoch + 1}
                if self.is_main:
                    ckpt.save_best(self.run_dir, best_payload(s.model, s.method, epoch + 1, self.run_id))
        if s.method.on_epoch_end(s.model, epoch, metrics):
            self._rebuild()
        state.reset_epoch_loss()
        self.save_checkpoint(epoch + 1, 0)

    def _rebuild(self) -> None:
        """The method changed the parameter set: a new set-up (new optimizer keeping momenta, re-wrapped)."""
        self._setup = self.setup.rebuilt(self.cfg, self.wrap_model)

    # ------------------------------------------------------------------ the record
    def _summary(self) -> RunSummary:
        """What the record reports about this run, as one value (the record module reads nothing else)."""
        s, state = self.setup, self.state
        request = s.built.request
        return RunSummary(
            cfg=self.cfg, run_id=self.run_id, method_name=s.method.name, method_code=s.built.method_code,
            members=list(s.model.member_names), method_info=s.method.record_info(s.model),
            dataset=s.data.bundle.describe(), synthetic=bool(s.data.bundle.synthetic),
            budget=request.budget.to_dict() if request.budget else None, params=s.built.report.to_dict(),
            steps=state.step, device=s.device, world_size=s.dist.world_size, timing=dict(state.timing),
            setup_s=state.setup_s, pipeline=s.data.train.pipeline,
            artifacts=tuple(request.artifacts), resumed_from=state.resumed_from, diverged_at=state.diverged_at)

    def finish(self, status: str) -> RunResult:
        """The final evaluation (on the validation-selected weights, if any) and the record."""
        final: dict[str, Any] = {}
        selection: dict[str, Any]
        state, s = self.state, self.setup
        bundle = s.data.bundle
        if status == "completed":
            best = state.best
            if bundle.eval_split == "val" and best["epoch"] > 0:
                weights = ckpt.load_best(self.run_dir, self.run_id) if self.is_main else None
                restore_model(broadcast_object(weights, s.dist), s.model, s.method)
                s.model.to(s.device)
                self._setup = s = s.rewrapped(self.wrap_model(s.model, s.runtime))
                selection = {"split": "val", "metric": "top1", "epoch": best["epoch"], "val_top1": best["top1"]}
            else:
                selection = {"split": "none", "rule": "last epoch", "epoch": self.cfg.train.epochs}
            eval_is_test = bundle.eval_split == "test" and bundle.eval is bundle.test
            anytime = s.model.num_members > 1  # every member subset, ordered by inference FLOPs
            if anytime:
                final = self.evaluate(s.data.test, anytime=True)
            elif eval_is_test and state.last_eval and state.last_eval[0] == self.cfg.train.epochs:
                final = dict(state.last_eval[1])  # the last epoch's eval already was the test split
            else:
                final = self.evaluate(s.data.test)
            final["split"] = "test"
            bad = non_finite(s.model, final)
            if bad:  # weights or evaluation gone non-finite although the training loss stayed finite
                state.diverged_at = {"epoch": self.cfg.train.epochs, "step": state.step, "reason": bad}
                status = "diverged"
                selection = {"split": "none", "rule": "run diverged"}
            s.runtime.log.write({"kind": "final", "step": state.step, **final})
        else:
            selection = {"split": "none", "rule": f"run {status}"}
        wall = state.wall_before + (time.perf_counter() - state.started)
        if self.is_main and status != "preempted":  # a stop in training said so already, with its checkpoint
            append_event(self.run_dir, "end", status=status, step=state.step)
        history = read_history(self.run_dir) if self.is_main else []
        record = Record.of(build_record(self._summary(), status, final, selection, wall, history))
        if self.is_main:
            self.folder.write_result(record)
        code = {"completed": EXIT_OK, "diverged": EXIT_DIVERGED, "preempted": EXIT_PREEMPTED}[status]
        if s.runtime.progress and status != "completed":
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
