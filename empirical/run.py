"""Train a ResNet with SGD and record trajectories comparable to theory.predict (design.md §3.3-3.6, theory.md §4).

    python -m empirical.run digits                              # embedded default, CPU, < 1 min
    python -m empirical.run smoke --steps 40                    # synthetic data, seconds (tests)
    python -m empirical.run cifar10 --data-dir ~/data --ema-decays 0.999,0.9999 --seed 1
    python -m empirical.run digits --out runs/d0 --resume       # continue after a crash / Ctrl-C
    python -m empirical.run digits --out runs/d0-half --branch-from runs/d0/checkpoints/step_000000500.pt \\
        --branch-schedule half                                  # same data order, LR halved from step 500
    torchrun --nproc_per_node=8 -m empirical.run imagenet --data-dir $IMAGENET_DIR

Exit status: 0 ok (or nothing left to resume), 2 bad input (one line on stderr, nothing written), 3 diverged
(files written, summary status "diverged"), 130 interrupted (resumable checkpoint written), 1 anything else.
The last line on stdout is the run directory. The command line is parsed and validated before torch is imported,
so bad input is refused in well under a second; the training loop lives in empirical/train.py.
"""
from __future__ import annotations

import json
import os
import sys
import traceback
from dataclasses import replace
from pathlib import Path

from empirical import config
from common import rundir
from common.cli import pipe_safe_stdout


class Stopped(Exception):
    """The run ended early with ``status`` (diverged / interrupted); files are written. ``code`` is the exit code."""

    def __init__(self, run_dir: Path, status: str, code: int, message: str):
        super().__init__(message)
        self.run_dir, self.status, self.code = run_dir, status, code


# ------------------------------------------------------------------------------------ config, dirs, restore

def resolve(argv) -> tuple[config.RunConfig, dict | None, str, int | None]:
    """The config to run, the state to start from (resume / branch checkpoint, or None), what happens, and the
    branch step (a new branch's checkpoint step; a resumed branch's saved one; else None).

    Every check that can fail on user input happens here, before anything is written."""
    preset, overrides = config.parse_cli(argv)
    fresh = config.validate(replace(config.PRESETS[preset], **overrides)) if preset else None
    parent = overrides.get("branch_from")
    if not overrides.get("resume") and parent is None:
        if fresh is None:
            config.from_cli(argv)  # raises the "missing PRESET" message
        if fresh.out is not None and Path(fresh.out).exists() and (not Path(fresh.out).is_dir()
                                                                   or any(Path(fresh.out).iterdir())):
            raise config.ConfigError(f"--out {fresh.out}: exists and is not empty; choose a new directory, or add "
                                     f"--resume to continue the run in it")
        return fresh, None, "new", None
    if parent is not None:  # branch: the parent's config with the branch and run-control flags
        if overrides.get("resume"):
            raise config.ConfigError("--branch-from starts a new run; use --out NEW_DIR without --resume (an "
                                     "interrupted branch resumes with --out BRANCH_DIR --resume alone)")
        from empirical import checkpoint   # torch: only once the command line is known to be valid
        try:
            state = checkpoint.load(Path(parent))
        except checkpoint.CheckpointError as e:
            raise config.ConfigError(f"--branch-from: {e}") from None
        saved, allowed = config.from_dict(json.loads(state["config"])), (*config.RUN_CONTROL, "branch_from",
                                                                          "branch_schedule")
        kind, branch_at = "branch", int(state["step"])
    else:
        if overrides.get("out") is None:
            raise config.ConfigError("--resume needs --out RUN_DIR (the run directory to continue)")
        out = Path(overrides["out"])
        if not (out / "config.json").is_file():
            raise config.ConfigError(f"--resume: {out} is not a run directory (no config.json); check --out")
        doc = rundir.read_json(out / "config.json")["config"]
        saved, allowed, state = config.from_dict(doc), config.RUN_CONTROL, None
        kind, branch_at = "resume", doc.get("branch_step")   # a resumed branch keeps its schedule from this step
    cfg = config.validate(replace(saved, **{k: v for k, v in overrides.items() if k in allowed}))
    clash = [k for k in config.differing(fresh, saved, ignore=allowed)] if fresh else \
        [k for k, v in overrides.items() if k not in allowed and getattr(saved, k) != v]
    if clash:
        raise config.ConfigError(f"--{kind}: {', '.join(clash)} differ from the saved run's config; drop those "
                                 f"flags (and PRESET) to use the saved values")
    if kind == "branch":
        if cfg.out is not None and Path(cfg.out).exists() and any(Path(cfg.out).iterdir()):
            raise config.ConfigError(f"--out {cfg.out}: exists and is not empty; choose a new directory")
        if state["step"] >= cfg.steps:
            raise config.ConfigError(f"--branch-from: the checkpoint is at step {state['step']}, the run ends at "
                                     f"{cfg.steps}; branch from an earlier checkpoint")
    return cfg, state, kind, branch_at


def main(argv: list[str] | None = None) -> Path:
    """Resolve the command line (no torch), then train; returns the run directory."""
    cfg, state, kind, branch_at = resolve(argv)
    from empirical.train import train
    return train(cfg, state, kind, branch_at, argv)


def cli(argv: list[str] | None = None) -> int:
    """Entry point with the error contract (see the module docstring for exit codes)."""
    with pipe_safe_stdout():   # `... | head` must not kill a training run in a progress row
        return _cli(argv)


def _input_errors() -> tuple[type, ...]:
    """Exception types that mean bad input (exit 2). The data and checkpoint ones live in modules that import torch,
    so they are looked up only when something went wrong after the command line was accepted."""
    found = [config.ConfigError, rundir.RunDirError]
    for mod, name in (("empirical.data", "DataError"), ("empirical.checkpoint", "CheckpointError")):
        if mod in sys.modules:
            found.append(getattr(sys.modules[mod], name))
    return tuple(found)


def _cli(argv: list[str] | None) -> int:
    try:
        main(argv)
    except _input_errors() as e:
        print(f"empirical.run: error: {e}", file=sys.stderr)
        return 2
    except Stopped as e:
        print(f"empirical.run: {e}", file=sys.stderr)
        if e.run_dir is not None:
            print(e.run_dir, flush=True)
        return e.code
    except OSError as e:
        print(f"empirical.run: error: cannot read or write {e.filename or ''}: {e.strerror or e} (earlier files are "
              f"intact: every write is atomic)", file=sys.stderr)
        return 1
    except Exception as e:  # under torchrun: say which rank failed; torchrun then stops the other ranks
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            raise
        traceback.print_exc()
        print(f"empirical.run: rank {os.environ.get('RANK')} failed ({type(e).__name__}: {e}); stopping all ranks",
              file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("empirical.run: interrupted before training started; nothing to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    # run the importable module's cli: empirical/train.py raises empirical.run.Stopped, which as __main__ would be a
    # different class and miss its except clause (exit 1 instead of 130 / 3)
    from empirical import run as _run
    sys.exit(_run.cli())
