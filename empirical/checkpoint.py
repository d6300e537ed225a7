"""Checkpoints that survive crashes: atomic, checksummed, loadable with ``torch.load(weights_only=True)``.

Layout: ``RUN_DIR/checkpoints/step_000001200.pt`` plus ``step_000001200.pt.sha256`` (hex digest of the .pt
bytes). The .pt is written first and the digest second, both via temp file + ``os.replace``, so a crash leaves
either a complete pair, or a .pt without digest (treated as invalid), never a half file under a final name. A
truncated or corrupted file fails its digest and the loader falls back to the previous checkpoint with a message.
The newest ``keep`` checkpoints are kept, plus every one whose step is a multiple of ``keep_every`` or is one of
``keep_steps`` (the branch points a run keeps by default: EMA start, SWA start, decay start; RunConfig.branch_points).

Naming and listing checkpoints needs no torch (an error about a missing --branch-from file is raised before torch is
imported); writing, loading and RNG states import it when called.

A checkpoint holds only tensors and plain containers (the ``weights_only`` loader refuses anything else): model,
optimiser, the step (which fixes the LR and the data position), WeightAverages state, bank indices, RNG states,
and the recorder's buffers (see run.py ``checkpoint_state``).
"""
from __future__ import annotations

import hashlib
import io
import random
import re
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

from common.rundir import atomic_write_bytes

CKPT_DIR = "checkpoints"
FORMAT = 1
_NAME = re.compile(r"^step_(\d+)\.pt$")


class CheckpointError(ValueError):
    """A checkpoint is missing, truncated, corrupted or of another format; the message says which and the fix."""


def path_for(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / CKPT_DIR / f"step_{int(step):09d}.pt"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint files of a run, newest (highest step) first."""
    d = Path(run_dir) / CKPT_DIR
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def step_of(path: Path) -> int | None:
    """The step of a checkpoint file name (``step_000001200.pt`` -> 1200), None for other names."""
    m = _NAME.match(Path(path).name)
    return int(m.group(1)) if m else None


def save(run_dir: Path, step: int, state: dict, keep: int = 2, keep_every: int = 0,
         keep_steps: tuple[int, ...] = ()) -> Path:
    """Write ``state`` as the checkpoint of ``step`` (atomic, with digest), then prune older ones: the newest
    ``keep`` stay, and so does every one at a multiple of ``keep_every`` (> 0) or at a step in ``keep_steps``."""
    import torch

    buf = io.BytesIO()
    torch.save({"format": FORMAT, "step": int(step), **state}, buf)
    data = buf.getvalue()
    path = path_for(run_dir, step)
    atomic_write_bytes(path, data)
    atomic_write_bytes(path.with_name(path.name + ".sha256"), f"{hashlib.sha256(data).hexdigest()}  {path.name}\n"
                       .encode())
    for old in list_checkpoints(run_dir)[keep:]:
        s = step_of(old)
        if (keep_every > 0 and s % keep_every == 0) or s in keep_steps:
            continue
        for p in (old, old.with_name(old.name + ".sha256")):
            p.unlink(missing_ok=True)
    return path


def load(path: Path) -> dict:
    """Verify the digest and load (CPU tensors, weights_only). Raises CheckpointError with the reason."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"checkpoint {path}: unreadable ({e.strerror or e})") from None
    side = path.with_name(path.name + ".sha256")
    try:
        want = side.read_text().split()[0]
    except (OSError, IndexError):
        raise CheckpointError(f"checkpoint {path}: no checksum file {side.name} (the write was cut short)") from None
    if hashlib.sha256(data).hexdigest() != want:
        raise CheckpointError(f"checkpoint {path}: checksum mismatch (truncated or corrupted file)")
    import torch

    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors of any kind mean "not a checkpoint of ours"
        raise CheckpointError(f"checkpoint {path}: not loadable ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path}: format {state.get('format') if isinstance(state, dict) else '?'},"
                              f" this code reads {FORMAT}")
    return state


def load_latest(run_dir: Path, warn: Callable[[str], None] | None = None) -> tuple[dict | None, Path | None]:
    """Newest valid checkpoint of the run (falling back past invalid ones, each reported via ``warn``)."""
    warn = warn or (lambda m: print(m, file=sys.stderr))
    for p in list_checkpoints(run_dir):
        try:
            return load(p), p
        except CheckpointError as e:
            warn(f"warning: {e}; falling back to the previous checkpoint")
    return None, None


# ------------------------------------------------------------------------------------------------ RNG state

def rng_state() -> dict[str, Any]:
    """torch (CPU and every CUDA device), numpy global and python ``random`` states, as tensors/plain values."""
    import torch

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
            "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                      "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
            "python": [int(random.getstate()[0]), [int(x) for x in random.getstate()[1]]]}


def set_rng_state(state: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    version, internal = state["python"]
    random.setstate((version, tuple(internal), None))
