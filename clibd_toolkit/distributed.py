"""torch.distributed process groups for runs launched by ``torchrun`` (or SLURM through torchrun), and the device
each process runs on (:func:`resolve_device`).

``torchrun --nproc_per_node N -m clibd_toolkit.cli train ...`` starts N processes with ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in their environment. :func:`init_distributed` joins them into
one process group through ``env://`` with NCCL when CUDA is available and gloo otherwise (CPU), and pins each
process to GPU ``LOCAL_RANK``. Nothing happens in a plain single-process run, so the same code path works with and
without torchrun (ecosystem notes section 8: env:// init, no ``mp.spawn``).

>>> from clibd_toolkit.distributed import distributed_session
>>> with distributed_session() as info:    # (rank 0, world 1) without torchrun
...     info.world_size
1
"""
from __future__ import annotations

import contextlib
import datetime
import logging
import os
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist

from .errors import ConfigError

log = logging.getLogger(__name__)

#: environment variables torchrun sets for every worker
TORCHRUN_VARIABLES: tuple[str, ...] = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the run: global rank, world size, rank on this machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """True when the environment says this process is one of several started by torchrun."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def current() -> DistInfo:
    """The :class:`DistInfo` of the initialised process group, or of the torchrun environment, else (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)),
                        str(dist.get_backend()))
    if launched_by_torchrun():
        return DistInfo(int(os.environ.get("RANK", 0)), int(os.environ["WORLD_SIZE"]),
                        int(os.environ.get("LOCAL_RANK", 0)))
    return DistInfo()


def is_main_process() -> bool:
    """True on rank 0 (and in every non-distributed run): the process that writes files and logs."""
    return current().is_main


def default_backend() -> str:
    """``nccl`` when CUDA is available, else ``gloo``."""
    return "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"


def init_distributed(backend: str | None = None, *, timeout_s: float = 1800.0) -> tuple[DistInfo, bool]:
    """Join the torchrun process group (``env://``) if this process was launched by torchrun.

    Idempotent: an already initialised group is reused (and not owned by this call).

    Args:
        backend: ``"nccl"``, ``"gloo"`` or None for :func:`default_backend`.
        timeout_s: how long collectives wait for the slowest rank before failing.

    Returns:
        ``(info, created)``: where this process sits, and whether this call created the group (and so should
        tear it down, see :func:`teardown_distributed`).

    Raises:
        ConfigError: torchrun variables are incomplete, or torch was built without distributed support.
    """
    if dist.is_available() and dist.is_initialized():
        return current(), False
    if not launched_by_torchrun():
        return DistInfo(), False
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this torch build has no torch.distributed; run a single process")
    missing = [v for v in TORCHRUN_VARIABLES if v not in os.environ]
    if missing:
        raise ConfigError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {missing} are not set; launch with "
                          "`torchrun --nproc_per_node N -m clibd_toolkit.cli ...` (it sets all of them)")
    backend = backend or default_backend()
    if backend not in ("nccl", "gloo"):
        raise ConfigError(f"distributed backend {backend!r}; expected 'nccl' (GPUs) or 'gloo' (CPU)")
    local_rank = int(os.environ["LOCAL_RANK"])
    if backend == "nccl":
        # each process drives the GPU of its local rank; set before the first CUDA call of NCCL
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, init_method="env://",
                            timeout=datetime.timedelta(seconds=timeout_s))
    info = current()
    log.info("joined process group: rank %d of %d (local rank %d, %s)", info.rank, info.world_size, local_rank,
             backend)
    return info, True


def teardown_distributed() -> None:
    """Leave the process group cleanly (waits for every rank first, so none exits while others still talk)."""
    if dist.is_available() and dist.is_initialized():
        with contextlib.suppress(RuntimeError):
            dist.barrier()
        dist.destroy_process_group()


@contextlib.contextmanager
def distributed_session(backend: str | None = None, *, timeout_s: float = 1800.0) -> Iterator[DistInfo]:
    """``with distributed_session() as info:`` joins the torchrun group (if any) and leaves it at the end.

    A group that already existed before the ``with`` is left alone.
    """
    info, created = init_distributed(backend, timeout_s=timeout_s)
    try:
        yield info
    finally:
        if created:
            teardown_distributed()


def barrier() -> None:
    """Wait for every rank (no-op when not distributed)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Copy every parameter and buffer of ``module`` from rank ``src`` to all ranks (no-op when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    with torch.no_grad():
        for tensor in list(module.state_dict().values()):
            if torch.is_tensor(tensor):
                dist.broadcast(tensor, src)


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda (LOCAL_RANK under torchrun), else mps, else cpu; explicit names are checked."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} was asked for but CUDA is not available; use device='auto' or 'cpu'")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("device 'mps' was asked for but is not available; use device='auto' or 'cpu'")
    return torch.device(device)


def dist_info() -> tuple[int, int]:
    """(rank, world size); (0, 1) when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1
