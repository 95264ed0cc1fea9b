"""Several processes (torchrun): who this process is, the process group's life, and the few collectives bmcell uses.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them bmcell is one process and every helper here is a no-op."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist

from bmcell.core.config import ConfigError

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class Dist:
    """This process's place among the training processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """True when there is more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True for the one process that writes files and prints."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every process."""
        if self.enabled:
            torch_dist.barrier()

    def all_gather(self, value: object) -> list:
        """Every process's value, in rank order (a picklable object each)."""
        if not self.enabled:
            return [value]
        gathered: list = [None] * self.world_size
        torch_dist.all_gather_object(gathered, value)
        return gathered

    @contextmanager
    def main_first(self) -> Iterator[None]:
        """Run the block on rank 0 first, then on the others (e.g. to create files the others then read)."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()


def from_environment() -> Dist:
    """The torchrun variables, or one process when none is set."""
    present = [name for name in TORCHRUN_VARIABLES if name in os.environ]
    if not present:
        return Dist()
    if len(present) != len(TORCHRUN_VARIABLES):
        missing = sorted(set(TORCHRUN_VARIABLES) - set(present))
        raise ConfigError(f"{', '.join(present)} set but not {', '.join(missing)}; start several processes with "
                          "`torchrun --nproc-per-node N -m bmcell train ...`, or unset them for one")
    return Dist(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]))


def uses_cuda(device_spec: str) -> bool:
    """Whether a --device value ends up on CUDA here."""
    return device_spec != "cpu" and torch.cuda.is_available()


@contextmanager
def process_group(device_spec: str) -> Iterator[Dist]:
    """Join the torchrun process group (NCCL on CUDA, gloo on CPU) for the block; destroy it on exit or error."""
    dist = from_environment()
    if not dist.enabled:
        yield dist
        return
    cuda = uses_cuda(device_spec)
    if cuda:
        torch.cuda.set_device(dist.local_rank)
    torch_dist.init_process_group("nccl" if cuda else "gloo")
    try:
        yield dist
    finally:
        torch_dist.destroy_process_group()
