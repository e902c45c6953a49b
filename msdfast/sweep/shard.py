"""Which runs this process takes: torchrun ranks and SLURM array tasks, through torch.distributed.

A sweep's run list (msdfast.sweep.spec.expand_runs) is cut into `count` deterministic shards, shard i being
runs[i::count] (round-robin, so shards differ by at most one run and neighbouring runs -- the seeds of one
prompt and method -- spread over the workers). This process's shard index and the shard count come from the
environment:

* torchrun (`torchrun --nproc_per_node=N [--nnodes ...] -m msdfast sweep SPEC`): RANK / WORLD_SIZE /
  LOCAL_RANK. torch.distributed is initialised (gloo on the CPU, nccl on CUDA, device cuda:LOCAL_RANK) so that
  the ranks can wait for each other (`barrier`) before rank 0 writes the summary.
* a SLURM array (`sbatch --array=0-(M-1)`): SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT, no process group (the
  tasks need not run at the same time); the last task to find every run finished writes the summary.
* both (torchrun inside each array task): shard = task * WORLD_SIZE + RANK of task count * WORLD_SIZE.
* neither: one shard, everything in this process.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Mapping, Sequence, TypeVar

from ..errors import UserInputError

__all__ = ["Shard", "shard_from_env", "take_shard"]

T = TypeVar("T")


def _env_int(env: Mapping[str, str], key: str, default: int) -> int:
    text = env.get(key)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise UserInputError(f"environment variable {key}: expected an integer, got {text!r}") from None


@dataclass(frozen=True)
class Shard:
    """This process's place among the sweep's workers (module doc)."""

    index: int = 0              # this worker's shard
    count: int = 1              # number of shards
    rank: int = 0               # torchrun rank within this array task (0 without torchrun)
    world_size: int = 1         # torchrun processes per array task (1 without torchrun)
    local_rank: int = 0         # torchrun's LOCAL_RANK: the CUDA device index of this rank
    array_task: int | None = None   # SLURM_ARRAY_TASK_ID (None outside a SLURM array)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def device(self, device: str | None) -> str:
        """The device of this worker: cuda:LOCAL_RANK when the run's device is CUDA (or defaults to it)."""
        import torch

        dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if torch.device(dev).type == "cuda" and torch.device(dev).index is None:
            dev = f"cuda:{self.local_rank}"
        return dev


def shard_from_env(env: Mapping[str, str] | None = None) -> Shard:
    """The Shard of this process from RANK/WORLD_SIZE/LOCAL_RANK and SLURM_ARRAY_TASK_ID/COUNT (module doc)."""
    env = os.environ if env is None else env
    world, rank = _env_int(env, "WORLD_SIZE", 1), _env_int(env, "RANK", 0)
    local = _env_int(env, "LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world:
        raise UserInputError(f"environment: RANK={rank} is not in [0, WORLD_SIZE={world})")
    task = env.get("SLURM_ARRAY_TASK_ID")
    if task is None or task == "":
        return Shard(rank, world, rank, world, local, None)
    tid = _env_int(env, "SLURM_ARRAY_TASK_ID", 0)
    count = _env_int(env, "SLURM_ARRAY_TASK_COUNT", 0)
    if count < 1:
        raise UserInputError("environment: SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not; launch "
                             "the sweep as an array of consecutive task ids (sbatch --array=0-N)")
    first = _env_int(env, "SLURM_ARRAY_TASK_MIN", 0)
    task_index = tid - first
    if not 0 <= task_index < count:
        raise UserInputError(f"environment: SLURM_ARRAY_TASK_ID={tid} is not in [SLURM_ARRAY_TASK_MIN={first}, "
                             f"+ SLURM_ARRAY_TASK_COUNT={count}); use consecutive task ids (--array=0-N)")
    return Shard(task_index * world + rank, count * world, rank, world, local, task_index)


def take_shard(items: Sequence[T], shard: Shard) -> list[T]:
    """This shard's items: items[index::count]."""
    return list(items[shard.index::shard.count])


def init_process_group(shard: Shard, device: str) -> bool:
    """Join torchrun's process group (gloo on the CPU, nccl on CUDA) when there are several ranks; True if this
    call created it. The timeout is long: ranks wait at the barrier for the slowest shard."""
    import torch.distributed as dist

    if not shard.distributed or dist.is_initialized():
        return False
    import torch

    backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(torch.device(device))
    timeout = datetime.timedelta(days=7)
    # torchrun's store outlives a restart (--max-restarts): the previous round's keys -- a dead rank's address
    # -- are still in it, and a new rank that reads one first fails to connect (pytorch/pytorch#135712). Each
    # round gets its own keys (TORCHELASTIC_RESTART_COUNT: exact on one node; several nodes: README).
    store, rank, world = next(dist.rendezvous("env://", timeout=timeout))
    store = dist.PrefixStore(f"msdfast-sweep/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)
    dist.init_process_group(backend=backend, store=store, rank=rank, world_size=world, timeout=timeout)
    return True


def barrier(shard: Shard) -> None:
    """Wait for every rank of this array task (nothing to wait for without torchrun)."""
    import torch.distributed as dist

    if shard.distributed and dist.is_initialized():
        dist.barrier()
