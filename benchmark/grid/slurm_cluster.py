"""What the grid's SLURM path needs to know about a cluster, asked of the cluster itself.

- ``query_cluster``: ``scontrol show config`` (bounded by a timeout, never a hang) -> the settings a
  submission depends on: MaxArraySize (array indices run 0..MaxArraySize-1, so a longer array is split
  into chunks, each indexed from 0), whether preempted jobs are sent their signal
  (``SlurmctldParameters=preempt_send_user_signal``), whether accounting runs (without it ``sacct``
  knows nothing and a cancelled job's state must come from the run folders), the requeue settings.
- ``array_chunks``: a list of n runs cut into arrays no longer than MaxArraySize.
- ``check_shared_folder``: a results or submitit folder on SLURM must be visible from every node; a
  node-local path (/tmp, /dev/shm, /run, /var/tmp) is refused with the reason.
- ``sbatch_parameters``: a grid spec's ``[resources]`` as submitit's ``slurm_*`` parameters.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import NPASError
from .spec import Resources

NODE_LOCAL = (Path("/tmp"), Path("/dev/shm"), Path("/run"), Path("/var/tmp"))


class SlurmUnavailable(NPASError):
    """No reachable SLURM controller (no scontrol, or it fails / times out)."""


@dataclass(frozen=True)
class ClusterConfig:
    cluster_name: str
    max_array_size: int  # array indices 0 .. max_array_size - 1
    preempt_send_user_signal: bool
    accounting: bool  # AccountingStorageType is not accounting_storage/none
    raw: dict[str, str]

    @classmethod
    def parse(cls, text: str) -> "ClusterConfig":
        raw: dict[str, str] = {}
        for line in text.splitlines():
            if " = " in line:
                key, _, value = line.partition(" = ")
                raw[key.strip()] = value.strip()
        if "MaxArraySize" not in raw:
            raise SlurmUnavailable("scontrol show config printed no MaxArraySize: not a SLURM controller's answer")
        return cls(cluster_name=raw.get("ClusterName", ""), max_array_size=int(raw["MaxArraySize"]),
                   preempt_send_user_signal="preempt_send_user_signal" in raw.get("SlurmctldParameters", ""),
                   accounting=raw.get("AccountingStorageType", "accounting_storage/none") != "accounting_storage/none",
                   raw=raw)


def query_cluster(timeout_s: float = 15.0) -> ClusterConfig:
    """The controller's configuration (``SLURM_CONF`` decides which cluster), or ``SlurmUnavailable``."""
    scontrol = shutil.which("scontrol")
    if scontrol is None:
        raise SlurmUnavailable("SLURM: scontrol is not on PATH; run on a cluster's login node (or start one: "
                               "slurm/localhost-cluster.sh start), or use npas grid run for this machine.")
    try:
        r = subprocess.run([scontrol, "show", "config"], capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise SlurmUnavailable(f"SLURM: `scontrol show config` did not answer within {timeout_s:.0f} s; is slurmctld "
                               "up (sinfo)?") from None
    if r.returncode != 0:
        raise SlurmUnavailable(f"SLURM: `scontrol show config` failed ({(r.stderr or r.stdout).strip()[:200]}); is "
                               "slurmctld up and SLURM_CONF right?")
    return ClusterConfig.parse(r.stdout)


def array_chunks(n: int, max_array_size: int) -> list[range]:
    """Positions 0..n-1 cut into consecutive chunks of at most ``max_array_size`` (each is submitted as its
    own array with indices 0..len-1: MaxArraySize caps the index, not the count)."""
    if n < 0 or max_array_size < 1:
        raise ValueError(f"array_chunks: n >= 0 and max_array_size >= 1, got {n}, {max_array_size}")
    return [range(i, min(n, i + max_array_size)) for i in range(0, n, max_array_size)]


def check_shared_folder(path: str | Path, field: str) -> None:
    """Refuse a node-local folder for something every node of a cluster must read and write."""
    p = Path(path).resolve()
    for local in NODE_LOCAL:
        if p == local or local in p.parents:
            raise NPASError(f"{field}: {p} is node-local ({local} exists on every node separately), so jobs on other "
                            "nodes would not see it; put it on a shared file system (e.g. your home or project "
                            "folder).")


def sbatch_parameters(resources: Resources, name: str, single_task: bool = False) -> dict[str, Any]:
    """submitit ``update_parameters`` keywords for one array of a grid with these resources.
    ``single_task``: a shared phase job (one process, at most one GPU, every CPU of the run)."""
    if single_task:
        resources = dataclasses.replace(resources, tasks_per_run=1, gpus_per_run=min(1, resources.gpus_per_run))
    tasks = resources.tasks_per_run or max(1, resources.gpus_per_run)
    # one task per DDP process (GridJob exports submitit's distributed environment): the CPUs are per task
    params: dict[str, Any] = {"name": name, "timeout_min": resources.time_min,
                              "cpus_per_task": max(1, resources.cpus_per_run // tasks),
                              "tasks_per_node": tasks, "nodes": 1}
    if resources.gpus_per_run:
        params["gpus_per_node"] = resources.gpus_per_run
    if resources.mem_gb:
        params["mem_gb"] = resources.mem_gb
    for key, submitit_key in (("partition", "slurm_partition"), ("constraint", "slurm_constraint"),
                              ("account", "slurm_account"), ("qos", "slurm_qos")):
        value = getattr(resources, key)
        if value:
            params[submitit_key] = value
    if resources.array_parallelism:
        params["slurm_array_parallelism"] = resources.array_parallelism
    return params
