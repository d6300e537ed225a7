"""Train a ResNet with SGD and record trajectories comparable to theory.predict (theory.md §4).

    python -m empirical.run digits                              # embedded default, CPU, < 1 min
    python -m empirical.run smoke --steps 40                    # synthetic data, seconds (tests)
    python -m empirical.run digits --steps 300                  # the digits timeline scaled to 300 steps
    python -m empirical.run digits --epochs 20                  # 20 epochs = 20 x 22 steps (printed)
    python -m empirical.run cifar10 --data-dir ~/data --ema-decays 0.999,0.9999 --seed 1
    python -m empirical.run digits --out runs/d0 --resume       # continue after a crash / Ctrl-C
    python -m empirical.run digits --out runs/d0-half --branch-from runs/d0/checkpoints/step_000000600.pt \\
        --branch-schedule half                                  # same data order, LR halved from step 600
    python -m empirical.run --out runs/d0-ema --branch-from runs/d0/checkpoints/step_000000600.pt \\
        --branch-schedule ema:0.99 --from-report runs/d0-report # H of the EMA-equivalent LR from the report
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

from empirical import config, flags, presets, validation
from empirical.stopped import Stopped
from common import prediction, rundir
from common.cli import pipe_safe_stdout


# ------------------------------------------------------------------------------------ config, dirs, restore

def resolve(argv) -> tuple[config.RunConfig, dict | None, str, int | None, list[str]]:
    """The config to run, the state to start from (resume / branch checkpoint, or None), what happens, the
    branch step (a new branch's checkpoint step; a resumed branch's saved one; else None), and notes to print
    (--epochs / --steps scaling / --from-report).

    Every check that can fail on user input happens here, before anything is written."""
    cli = flags.parse(argv)
    given, notes = flags.expand(cli)
    if given.get("prediction") and given.get("branch_from") and not given.get("branch_schedule"):
        try:   # the branch runs the schedule its prediction was written for
            given["branch_schedule"] = str(prediction.read_prediction(given["prediction"])["schedule"])
        except rundir.RunDirError as e:
            raise config.ConfigError(f"--prediction: {e}") from None
        notes = [*notes, f"--branch-schedule {given['branch_schedule']}: the schedule of --prediction "
                         f"{given['prediction']}"]
    fresh = None
    if cli.preset:
        fresh, more = flags.resolve_preset(cli, given)
        notes = notes + more
    parent = given.get("branch_from")
    if not given.get("resume") and parent is None:
        if fresh is None:
            raise config.ConfigError(f"missing PRESET: choose one of {', '.join(presets.PRESETS)} "
                                     f"(e.g. python -m empirical.run digits)")
        if fresh.out is not None and Path(fresh.out).exists() and (not Path(fresh.out).is_dir()
                                                                   or any(Path(fresh.out).iterdir())):
            raise config.ConfigError(f"--out {fresh.out}: exists and is not empty; choose a new directory, or add "
                                     f"--resume to continue the run in it")
        fresh, notes = sized_workers(fresh, given, notes)
        return fresh, None, "new", None, notes
    if parent is not None:  # branch: the parent's config with the branch and run-control flags
        if given.get("resume"):
            raise config.ConfigError("--branch-from starts a new run; use --out NEW_DIR without --resume (an "
                                     "interrupted branch resumes with --out BRANCH_DIR --resume alone)")
        if not Path(parent).is_file():
            raise config.ConfigError(missing_checkpoint(Path(parent)))
        from empirical import checkpoint   # torch: only once the command line is known to be valid
        try:
            state = checkpoint.load(Path(parent))
        except checkpoint.CheckpointError as e:
            raise config.ConfigError(f"--branch-from: {e}") from None
        saved, allowed = config.from_dict(json.loads(state["config"])), (*config.RUN_CONTROL, "branch_from",
                                                                          "branch_schedule", "prediction")
        if cli.from_report is not None and cli.preset is None:   # H for the parent's EMA update period
            given, notes = flags.expand(cli, ema_every=saved.ema_every)
        kind, branch_at = "branch", int(state["step"])
    else:
        if given.get("out") is None:
            raise config.ConfigError("--resume needs --out RUN_DIR (the run directory to continue)")
        out = Path(given["out"])
        if not (out / "config.json").is_file():
            raise config.ConfigError(f"--resume: {out} is not a run directory (no config.json); check --out")
        doc = rundir.read_config(out)
        saved, allowed, state = config.from_dict(doc), config.RUN_CONTROL, None
        kind, branch_at = "resume", doc.get("branch_step")   # a resumed branch keeps its schedule from this step
    cfg = validation.validate(replace(saved, **{k: v for k, v in given.items() if k in allowed}))
    clash = [k for k in config.differing(fresh, saved, ignore=allowed)] if fresh else \
        [k for k, v in given.items() if k not in allowed and getattr(saved, k) != v]
    if clash:
        raise config.ConfigError(f"--{kind}: {', '.join(clash)} differ from the saved run's config; drop those "
                                 f"flags (and PRESET) to use the saved values")
    if kind == "branch":
        if cfg.out is not None and Path(cfg.out).exists() and any(Path(cfg.out).iterdir()):
            raise config.ConfigError(f"--out {cfg.out}: exists and is not empty; choose a new directory")
        if state["step"] >= cfg.steps:
            raise config.ConfigError(f"--branch-from: the checkpoint is at step {state['step']}, the run ends at "
                                     f"{cfg.steps}; branch from an earlier checkpoint")
        if cfg.prediction is not None:   # about this branch, and kept by its absolute path
            try:
                prediction.check_matches(prediction.read_prediction(cfg.prediction), cfg.prediction,
                                         cfg.branch_schedule, branch_at)
            except rundir.RunDirError as e:
                raise config.ConfigError(f"--prediction: {e}") from None
            cfg = replace(cfg, prediction=str(Path(cfg.prediction).resolve()))
    cfg, notes = sized_workers(cfg, given, notes)
    return cfg, state, kind, branch_at, notes


def available_cpus() -> int:
    """CPUs this process may run on: its affinity mask where the OS has one (a container's or taskset's limit, which
    os.cpu_count ignores), else the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):   # macOS, Windows
        return max(1, os.cpu_count() or 1)


def auto_workers(cap: int, cpus: int, local_ranks: int = 1) -> int:
    """DataLoader workers for a maximum of ``cap``: this process's share of the ``cpus`` (``local_ranks`` training
    processes on the machine, torchrun's LOCAL_WORLD_SIZE, split them) less one for the training process itself,
    at most ``cap``, at least 0 (0 loads in the training process). 2 CPUs and one process: 1 worker."""
    return max(0, min(cap, cpus // max(1, local_ranks) - 1))


def sized_workers(cfg: config.RunConfig, given: dict, notes: list[str]) -> tuple[config.RunConfig, list[str]]:
    """The run's ``workers``: as given with --workers, else the preset's (or the saved run's) value taken as a
    maximum and lowered to what this machine's CPUs allow (:func:`auto_workers`); a lowered value is noted."""
    if "workers" in given or cfg.workers == 0:
        return cfg, notes
    cpus, ranks = available_cpus(), int(os.environ.get("LOCAL_WORLD_SIZE") or 1)
    n = auto_workers(cfg.workers, cpus, ranks)
    if n == cfg.workers:
        return cfg, notes
    shared = f", shared by {ranks} ranks" if ranks > 1 else ""
    return replace(cfg, workers=n), notes + [
        f"--workers {n} instead of {cfg.workers}: {cpus} CPUs available{shared}, one kept for training "
        f"(give --workers N to choose)"]


def missing_checkpoint(path: Path) -> str:
    """The --branch-from error for a file that is not there: the checkpoints that run does have, and how to keep
    more (a run keeps its newest two, its branch points and the multiples of --checkpoint-keep-every)."""
    from empirical import checkpoint   # naming and listing checkpoints imports no torch
    run_dir = path if path.is_dir() else path.parent.parent if path.parent.name == checkpoint.CKPT_DIR \
        else path.parent                                            # a run directory given instead of its file too
    have = [p for p in reversed(checkpoint.list_checkpoints(run_dir))
            if p.with_name(p.name + ".sha256").is_file()]          # complete ones only, oldest first
    listed = (f"{run_dir / checkpoint.CKPT_DIR} has steps {', '.join(str(checkpoint.step_of(p)) for p in have)}"
              if have else f"{run_dir / checkpoint.CKPT_DIR} holds none (a checkpoint is "
                           f"RUN/{checkpoint.CKPT_DIR}/step_NNNNNNNNN.pt)")
    return (f"--branch-from {path}: no such checkpoint; {listed}. A run keeps its newest two checkpoints, the ones "
            f"at its EMA start, SWA start and decay start, and every multiple of --checkpoint-keep-every N; to keep "
            f"more, train the parent with --checkpoint-every N --checkpoint-keep-every N")


def main(argv: list[str] | None = None) -> Path:
    """Resolve the command line (no torch), then train; returns the run directory."""
    cfg, state, kind, branch_at, notes = resolve(argv)
    if int(os.environ.get("RANK", "0")) == 0:   # under torchrun, once
        for note in notes:   # what --epochs / --steps / --from-report resolved to, before the run's own header
            print(f"empirical.run: {note}", flush=True)
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
    except OSError as e:   # common.rundir's writers name their file (rundir.naming)
        print(f"empirical.run: error: {rundir.os_error_text(e)} (earlier files are intact: every write is atomic)",
              file=sys.stderr)
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
    sys.exit(cli())
