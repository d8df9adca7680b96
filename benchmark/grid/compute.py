"""What a grid will cost before it is submitted: FLOPs per run and the GPU-hours they take at a stated rate.

A researcher sizing a paper-scale grid (``slurm/*.toml``) needs its cost before the first job starts; this is
FLOP arithmetic, shown with the rate it assumes, not a measurement:

- a training image costs 3x the model's forward FLOPs (forward + backward, the usual rule: the backward pass
  is about twice the forward), the forward FLOPs counted on the built model by ``torch.utils.flop_counter``
  (2 per multiply-add; an ensemble counts every member; a weight generator's own FLOPs are per step, not per
  image, and left out);
- a run trains ``epochs x steps_per_epoch x batch_size`` images (``drop_last``: whole batches; capped by
  ``train.max_steps_per_epoch``), evaluates its evaluation split every ``eval_every`` epochs and the test set
  once more when the evaluation split is a validation split;
- a phase (SSN's group search, SuperWeights' cluster search) trains ``Phase.epochs`` over the same training
  data with the run's model size (the search models are the same network); a phase shared between runs is
  counted once, in the grid's total;
- GPU-hours = FLOPs / (``resources.gpu_tflops`` x 10^12 x 3600): one GPU's sustained rate, 25 TFLOP/s unless
  the spec says otherwise (an assumption: no GPU was measured here; calibrate it from one finished run).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..config import Config
from ..data.info import dataset_info
from ..data.partition import val_size

BACKWARD_FACTOR = 3  # training FLOPs per image / forward FLOPs


@dataclass(frozen=True)
class Compute:
    """The images one job pushes through a model of ``gflops`` forward GFLOPs per image."""

    gflops: float  # forward, one image (all members)
    train_images: int  # forward + backward
    eval_images: int  # forward only

    @property
    def flops(self) -> float:
        return self.gflops * 1e9 * (BACKWARD_FACTOR * self.train_images + self.eval_images)

    def gpu_hours(self, tflops: float) -> float:
        return self.flops / (tflops * 1e12) / 3600.0


def split_sizes(cfg: Config) -> tuple[int, int, int]:
    """(training examples, evaluation-split examples, test examples) of ``cfg.data``, from the data set's
    known sizes (nothing is read)."""
    d = cfg.data
    info = dataset_info(d.name)
    n_train, n_test = (d.synthetic_train, d.synthetic_test) if info.synthetic else (info.train_size, info.test_size)
    n_eval = n_test
    if d.val_fraction > 0:
        n_eval = val_size(n_train, d.val_fraction)
        n_train -= n_eval
    if d.train_subset:
        n_train = min(n_train, d.train_subset)
    if d.eval_subset:
        n_eval = min(n_eval, d.eval_subset)
    return n_train, n_eval, n_test


def epoch_images(cfg: Config, cap: int = 0) -> int:
    """Images one training epoch of ``cfg`` reads (whole batches; ``cap`` > 0 overrides the config's step cap)."""
    n_train, _, _ = split_sizes(cfg)
    b = cfg.train.batch_size
    steps = n_train // b if cfg.train.drop_last else math.ceil(n_train / b)
    limit = cap or cfg.train.max_steps_per_epoch
    if limit:
        steps = min(steps, limit)
    return steps * b


def training_compute(cfg: Config, gflops: float) -> Compute:
    """A run's training and evaluation (its phases apart)."""
    _, n_eval, n_test = split_sizes(cfg)
    t = cfg.train
    evals = sum(1 for e in range(1, t.epochs + 1) if e % t.eval_every == 0 or e == t.epochs)
    extra_test = n_test if cfg.data.val_fraction > 0 else 0
    return Compute(gflops, t.epochs * epoch_images(cfg), evals * n_eval + extra_test)


def phase_compute(cfg: Config, gflops: float, epochs: float, max_steps_per_epoch: int = 0) -> Compute:
    """A phase that trains ``epochs`` over the run's training data (no evaluation)."""
    return Compute(gflops, int(round(epochs * epoch_images(cfg, max_steps_per_epoch))), 0)


def format_hours(hours: float | None) -> str:
    if hours is None:
        return ""
    if hours >= 100:
        return f"{hours:,.0f}"
    return f"{hours:.3g}"  # three significant digits: a CPU-scale run's 0.000412 stays readable


@dataclass(frozen=True)
class GridCost:
    """Estimated GPU-hours of every run (its own phases included) and of the grid's shared phases, at ``tflops``."""

    tflops: float
    runs: dict[str, float | None]  # run id -> GPU-hours; None: the model's FLOPs are unknown before a phase
    shared_phases: dict[str, float]  # phase key -> GPU-hours (counted once, whatever the runs that read it)

    @property
    def total(self) -> float:
        return sum(h for h in self.runs.values() if h is not None) + sum(self.shared_phases.values())

    @property
    def unknown(self) -> int:
        return sum(1 for h in self.runs.values() if h is None)


def grid_cost(runs, gflops_of, tflops: float) -> GridCost:
    """``runs``: GridRuns; ``gflops_of(run)``: its model's forward GFLOPs or None (``expand.Previewer``)."""
    from ..experiment import config_request
    from ..plugins import create_method
    from ..trainer.phase import shared_phase_key

    per_run: dict[str, float | None] = {}
    shared: dict[str, float] = {}
    for r in runs:
        g = gflops_of(r)
        if g is None:
            per_run[r.run_id] = None
            continue
        hours = training_compute(r.config, g).gpu_hours(tflops)
        method = create_method(r.config.method.name, r.config.method.options)
        for phase in method.phases(config_request(r.config)):
            if not phase.epochs:
                continue
            h = phase_compute(r.config, g, phase.epochs, phase.max_steps_per_epoch).gpu_hours(tflops)
            key = shared_phase_key(method, phase.name, r.config)
            if key is None:
                hours += h
            else:
                shared.setdefault(key, h)
        per_run[r.run_id] = hours
    return GridCost(tflops, per_run, shared)
