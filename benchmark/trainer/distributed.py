"""Process-group setup for DDP: NCCL on GPUs, gloo on CPU, from torchrun's environment.

Launch several processes with ``torchrun --nproc_per_node N -m npasbench.cli train ...``; a single
process needs nothing. On this project's CPU machines DDP runs over gloo (tested by
``tests/test_ddp.py``: a real 2-process run, its eval counts, identical replicas, SIGTERM + resume);
NCCL paths are the same code with ``backend="nccl"`` and need GPUs.

Environment:
  ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT`` -- set by torchrun.
  ``NPAS_DIST_TIMEOUT`` -- seconds a collective may wait before it fails (default: torch's, 30 min
  for gloo and 10 min for NCCL). A rank that died or took another branch then surfaces as an
  error instead of a silent hang until the job's time limit.

Helpers accept tensors on any device: with NCCL, a CPU tensor (e.g. the trainer's epoch loss sums)
is reduced through a GPU copy, since NCCL only moves GPU memory.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.distributed as dist

from ..errors import ConfigError

TIMEOUT_ENV = "NPAS_DIST_TIMEOUT"


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""  # "gloo" | "nccl" | "" (single process)
    owns_group: bool = False  # this module created the process group (and so destroys it)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        if default is None:
            raise ConfigError(
                f"distributed launch: WORLD_SIZE={os.environ.get('WORLD_SIZE')} but {name} is not set; "
                "launch with torchrun (it sets RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT)."
            )
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"distributed launch: {name}={raw!r} is not an integer.") from None


def dist_timeout() -> datetime.timedelta | None:
    """The collective timeout from ``NPAS_DIST_TIMEOUT`` (seconds), or None for torch's default."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        raise ConfigError(f"{TIMEOUT_ENV}={raw!r}: give the collective timeout in seconds, e.g. 600.") from None
    if seconds <= 0:
        raise ConfigError(f"{TIMEOUT_ENV}={raw!r}: the timeout must be positive.")
    return datetime.timedelta(seconds=seconds)


def _single_node() -> bool:
    local_world = os.environ.get("LOCAL_WORLD_SIZE")
    return local_world is not None and local_world == os.environ.get("WORLD_SIZE")


def is_main_process() -> bool:
    """Whether this process is rank 0 of the launch torchrun describes (or the only process): what
    ``init_distributed(...).is_main`` will say, known before the process group is joined."""
    return _env_int("WORLD_SIZE", 1) <= 1 or os.environ.get("RANK", "0") == "0"


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group torchrun describes (a no-op for a single process).

    GPU: binds this process to ``cuda:LOCAL_RANK`` *before* creating the NCCL communicator (else
    every rank's first collective lands on GPU 0). CPU: gloo; on a single node it talks over the
    loopback interface unless ``GLOO_SOCKET_IFNAME`` says otherwise (containers whose hostname
    does not resolve otherwise fail in gloo's device set-up).
    """
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistInfo()
    rank = _env_int("RANK")
    local = _env_int("LOCAL_RANK", 0)
    if not 0 <= rank < world:
        raise ConfigError(f"distributed launch: RANK={rank} is outside 0..WORLD_SIZE-1={world - 1}.")
    cuda = device_type == "cuda"
    if cuda:
        if not 0 <= local < torch.cuda.device_count():
            raise ConfigError(
                f"distributed launch: LOCAL_RANK={local} but this node has {torch.cuda.device_count()} GPU(s); "
                "use --nproc_per_node <= the number of GPUs."
            )
        torch.cuda.set_device(local)
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if cuda else "gloo"
        kwargs: dict = {"backend": backend, "rank": rank, "world_size": world}
        timeout = dist_timeout()
        if timeout is not None:
            kwargs["timeout"] = timeout
        if cuda:
            kwargs["device_id"] = torch.device("cuda", local)
        elif "GLOO_SOCKET_IFNAME" not in os.environ and _single_node() and os.path.exists("/sys/class/net/lo"):
            os.environ["GLOO_SOCKET_IFNAME"] = "lo"
        dist.init_process_group(**kwargs)
        owns = True
    elif (dist.get_world_size(), dist.get_rank()) != (world, rank):
        raise ConfigError(
            f"distributed launch: a process group (rank {dist.get_rank()} of {dist.get_world_size()}) already "
            f"exists but the environment says rank {rank} of {world}."
        )
    return DistInfo(rank, world, local, backend=str(dist.get_backend()), owns_group=owns)


def _comm_device(t: torch.Tensor, info: DistInfo) -> torch.device:
    if info.backend == "nccl" and t.device.type != "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return t.device


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``t`` over ranks, in place; returns ``t``."""
    return _all_reduce(t, info, dist.ReduceOp.SUM)


def _all_reduce(t: torch.Tensor, info: DistInfo, op) -> torch.Tensor:
    if not info.enabled:
        return t
    dev = _comm_device(t, info)
    if dev == t.device:
        dist.all_reduce(t, op=op)
    else:
        buf = t.to(dev)
        dist.all_reduce(buf, op=op)
        t.copy_(buf)
    return t


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True on every rank if ``flag`` is true on any rank (a collective: all ranks must call it).

    For decisions that change which collectives come next, e.g. "a preemption signal arrived, save
    and stop": signals reach ranks at different step boundaries, and a rank that stops alone waits in
    the checkpoint barrier while the others wait in the next step's gradient all-reduce, forever.
    """
    if not info.enabled:
        return bool(flag)
    t = torch.tensor([1 if flag else 0], dtype=torch.int32)
    return bool(_all_reduce(t, info, dist.ReduceOp.MAX).item())


def all_gather_floats(values: Sequence[float], info: DistInfo) -> list[list[float]]:
    """Every rank's ``values``, in rank order, on every rank (a collective). float64: exact for the
    trainer's per-rank loss sums and example counts, so a checkpoint can store each rank's share."""
    local = torch.tensor([float(v) for v in values], dtype=torch.float64)
    if not info.enabled:
        return [local.tolist()]
    local = local.to(_comm_device(local, info))
    parts = [torch.empty_like(local) for _ in range(info.world_size)]
    dist.all_gather(parts, local)
    return [p.cpu().tolist() for p in parts]


def broadcast_object(obj, info: DistInfo):
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(info: DistInfo) -> None:
    if not info.enabled:
        return
    if info.backend == "nccl":
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    """Destroy the process group if :func:`init_distributed` created it (not one a caller made)."""
    if info.enabled and info.owns_group and dist.is_initialized():
        dist.destroy_process_group()
