"""Device, autocast and DDP setup for empirical.run (nanoGPT-style detection from RANK/WORLD_SIZE).

``setup(cfg)`` returns an :class:`Env`: the device, an autocast context (bf16 on CUDA only, else a no-op), the
rank, world size and whether this process writes (rank 0). Under ``torchrun`` the process group uses gloo on CPU
and nccl on CUDA, with a long timeout because rank 0 alone runs the measurements and evaluations while the other
ranks wait at the next collective.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from empirical.config import ConfigError


@dataclass
class Env:
    device: torch.device
    ctx: Any                     # context manager for forward passes: autocast(bf16) or nullcontext
    rank: int = 0
    world_size: int = 1
    ddp: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def info(self) -> dict:
        """Facts for env.json."""
        import torchvision

        name = torch.cuda.get_device_name(self.device) if self.is_cuda else "cpu"
        return {"torch": torch.__version__, "torchvision": torchvision.__version__, "device": str(self.device),
                "device_name": name, "world_size": self.world_size,
                "backend": dist.get_backend() if self.ddp else None,
                "cuda": torch.version.cuda if self.is_cuda else None,
                "cudnn": torch.backends.cudnn.version() if self.is_cuda else None,
                "autocast": "bf16" if not isinstance(self.ctx, contextlib.nullcontext) else "none",
                "cpu_threads": torch.get_num_threads()}


def _device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name}: CUDA is not available here; use --device cpu")
        dev = torch.device("cuda", local_rank if dev.index is None else dev.index)
    elif dev.type != "cpu":
        raise ConfigError(f"--device {name}: use auto, cpu, cuda or cuda:N")
    return dev


def setup(device: str, bf16: bool) -> Env:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = _device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", timeout=dt.timedelta(hours=2))
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if (bf16 and dev.type == "cuda") else contextlib.nullcontext()
    return Env(dev, ctx, rank, world, world > 1)


def broadcast_flags(flags: list[float], env: Env) -> list[float]:
    """Element-wise max of ``flags`` over ranks (e.g. [diverged, interrupted])."""
    if not env.ddp:
        return flags
    t = torch.tensor(flags, dtype=torch.float64, device=env.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def barrier(env: Env) -> None:
    if env.ddp:
        dist.barrier()


def teardown(env: Env) -> None:
    if env.ddp and dist.is_initialized():
        dist.destroy_process_group()
