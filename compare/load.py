"""Load run directories and group them: seeds of one setup vs branches taken off it (docs/run-series.md).

A *setup* is a set of runs whose resolved configs agree on everything except the seed and the output/bookkeeping
keys. Runs whose ``config.branch_from`` is set are *branches* (a checkpoint of a base run continued under another
LR schedule); they join the setup whose base config they share apart from the schedule/LR keys. Nothing here
interprets the numbers: it only reads, validates and aligns series.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.rundir import Run, RunDirError, load_run
from theory import spec

# Keys that differ between seeds / branches of one setup, or only record where output went or how one call ran
# (every run-control flag of empirical.run, empirical.config.RUN_CONTROL; tested).
PER_RUN_KEYS = {"seed", "out", "run_dir", "data_seed", "branch_from", "branch_step", "branch_schedule", "prediction",
                "prediction_sha256", "device",
                "max_steps", "checkpoint", "checkpoint_every", "checkpoint_keep_every", "checkpoint_branch_points",
                "resume", "workers", "tensorboard",
                "data"}   # "data": the loader's description, which names the seed of the split (dataset is its own key)
BRANCH_KEYS = {"schedule", "lr_schedule", "schedule_params", "steps", "epochs", "ema_decays", "swa_start",
               "two_point_gaps", "n_points", "n_point_gap", "final_lr"}

# What each analysis needs recorded, said for both ways a run directory is made (the CLI's flags, and the library
# objects of a user's own loop, README "Use it in your own training loop"): compare's messages quote these.
RECORDINGS = {
    "probes": "one-step probes (empirical.run --probe-every N; in your own loop empirical.OneStepProbe)",
    "lag grid": "two-point averages at several lags, evaluated densely in the constant-LR window (empirical.run "
                "--two-point-gaps with --eval-dense-every; in your own loop TwoPoint(k) for several k in "
                "WeightAverages, evaluated every few steps)",
    "bank": "the fixed-batch bank (empirical.run --bank-every N; in your own loop empirical.FixedBatchBank)",
    "curvature": "the top Hessian eigenvalue (empirical.run --curv-every N; in your own loop empirical.TopCurvature)",
    "alignment": "gradient alignment (empirical.run --align-every N; in your own loop empirical.GradientAlignment)",
}

# The order reports list averages in: the raw iterate, then EMAs, N-point, SWA and two-point averages, each by its
# decay / gap / N (so "ema_0.99" comes before "ema_0.999" and two_point_k10 before two_point_k100).
AVERAGE_ORDER = (spec.NoAverage, spec.EMA, spec.NPoint, spec.SWA, spec.TwoPoint)

RERECORD = ("re-record the run with the current empirical.run (or, from your own loop, the current library: "
            "empirical.WeightAverages with empirical.RunWriter), which writes each average's theory.spec record")


def recorded_averages(cfg: dict, source: str = "config.json") -> dict[str, spec.Averaging]:
    """{variant name: the theory.spec average the run recorded, with its timing}: config.json's ``averaging.specs``
    (each average's ``to_dict()`` keyed by its theory.spec.variant_name, written by empirical/averaging.py), with the
    raw iterate (spec.NoAverage) under ``raw`` first. The one place compare learns an average's start, period, length
    and weights. ``source`` names the file in messages. RunDirError (one line) when the record is missing, or holds
    an entry that is not an average or is filed under another average's name."""
    record = cfg.get("averaging") if isinstance(cfg, dict) else None
    specs = record.get("specs") if isinstance(record, dict) else None
    if not isinstance(specs, dict):
        raise RunDirError(f"{source} has no averaging.specs (the record of each average the run kept); {RERECORD}")
    out: dict[str, spec.Averaging] = {"raw": spec.NoAverage()}
    for name, entry in specs.items():
        try:
            avg = spec.averaging_from_dict(entry)
        except ValueError as e:
            raise RunDirError(f"{source}: averaging.specs[{name!r}]: {e}; {RERECORD}") from None
        if spec.variant_name(avg) != name:   # its series are read under this name: another average's would be wrong
            raise RunDirError(f"{source}: averaging.specs[{name!r}] records the average named "
                              f"{spec.variant_name(avg)!r}; {RERECORD}")
        out[name] = avg
    return out


def _listing_order(avg: spec.Averaging) -> tuple:
    return (AVERAGE_ORDER.index(type(avg)), getattr(avg, "decay", 0.0), getattr(avg, "gap", 0), getattr(avg, "n", 0))


@dataclass
class Setup:
    """Base runs (seeds) of one configuration and the branch runs taken off them."""

    base: list[Run] = field(default_factory=list)
    branches: list[Run] = field(default_factory=list)
    posthoc: list[Run] = field(default_factory=list)   # post-hoc averages of a base run's checkpoints (is_posthoc)

    @property
    def config(self) -> dict:
        return self.base[0].config.get("config", {}) if self.base else {}

    def averages(self, split: str = "test") -> dict[str, spec.Averaging]:
        """{name: recorded average} of the variants every base run evaluated on ``split`` (series
        eval/<split>_loss_<name>) and the base config records (:func:`recorded_averages`): raw first, then in
        AVERAGE_ORDER. RunDirError when the base config records no averages."""
        if not self.base:
            return {}
        prefix = f"eval/{split}_loss_"
        evaluated = set.intersection(*({k[len(prefix):] for k in r.trajectory.series if k.startswith(prefix)}
                                       for r in self.base))
        recorded = recorded_averages(self.config, f"{self.base[0].path}/config.json")
        return dict(sorted(((n, a) for n, a in recorded.items() if n in evaluated),
                           key=lambda item: _listing_order(item[1])))


def load_runs(paths: list[str | Path]) -> list[Run]:
    """Load every path as a run directory; RunDirError (one line) on the first bad one."""
    if not paths:
        raise RunDirError("no run directory given; pass one or more run directories (each holds config.json, ...)")
    runs = []
    for p in paths:
        r = load_run(p)
        if "eval/step" not in r.trajectory:
            raise RunDirError(f"{p}: trajectory.npz has no 'eval/step' series; is this an empirical run (docs/run-series.md)?")
        runs.append(r)
    return runs


def _key(cfg: dict, drop: set) -> str:
    """What must agree for runs to be one setup: every config key but ``drop``; of the resolved ``averaging`` record
    only its specs (the averages themselves), since its other entries describe how the recorder stored them."""
    items = {k: (v.get("specs", v) if k == "averaging" and isinstance(v, dict) else v) for k, v in cfg.items()}
    return repr(sorted((k, repr(v)) for k, v in items.items() if k not in drop))


def is_branch(run: Run) -> bool:
    return bool(run.config.get("config", {}).get("branch_from"))


def is_posthoc(run: Run) -> bool:
    """A post-hoc average of a base run's kept checkpoints (empirical.posthoc): its config is the base run's plus a
    ``posthoc`` section, so it joins that setup as its own kind, never as a seed."""
    return "posthoc" in run.config.get("config", {})


def group_runs(runs: list[Run]) -> list[Setup]:
    """Seeds → one Setup per base config; each branch joins the setup whose config it shares (minus schedule keys).
    Raises RunDirError if a branch matches no base run."""
    setups: dict[str, Setup] = {}
    for r in runs:
        if not is_branch(r) and not is_posthoc(r):
            setups.setdefault(_key(r.config.get("config", {}), PER_RUN_KEYS), Setup()).base.append(r)
    for r in runs:
        if is_posthoc(r):
            k = _key(r.config.get("config", {}), PER_RUN_KEYS | {"posthoc"})
            match = [s for s in setups.values() if _key(s.config, PER_RUN_KEYS) == k]
            if not match:
                raise RunDirError(f"{r.path}: post-hoc average whose base run was not given; pass the run it averages")
            match[0].posthoc.append(r)
    loose = PER_RUN_KEYS | BRANCH_KEYS | {"lr"}
    for r in runs:
        if is_branch(r):
            k = _key(r.config.get("config", {}), loose)
            match = [s for s in setups.values() if _key(s.config, loose) == k]
            if not match:
                raise RunDirError(f"{r.path}: branch run whose parent setup was not given; pass its base run(s) too")
            match[0].branches.append(r)
    return list(setups.values())


def branch_start(run: Run) -> int:
    """Step at which a branch left its parent: config.branch_step if recorded, else its first logged step."""
    cfg = run.config.get("config", {})
    if cfg.get("branch_step") is not None:
        return int(cfg["branch_step"])
    tr = run.trajectory
    key = "train/step" if "train/step" in tr else "eval/step"
    return int(tr[key][0]) if tr[key].size else 0


def stack(runs: list[Run], key: str, steps: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Seed matrix [n_runs, T] of a 1-D series on common steps (the first run's, or ``steps``), by interpolation.
    Missing series or steps outside a run's range give NaN."""
    group = key.split("/", 1)[0]
    if steps is None:
        steps = runs[0].trajectory[f"{group}/step"]
    rows = []
    for r in runs:
        tr = r.trajectory
        if key not in tr:
            rows.append(np.full(steps.size, np.nan))
            continue
        s, y = tr[f"{group}/step"].astype(float), np.asarray(tr[key], dtype=float)
        ok = np.isfinite(y)
        if ok.sum() < 1:
            rows.append(np.full(steps.size, np.nan))
            continue
        v = np.interp(steps, s[ok], y[ok], left=np.nan, right=np.nan)
        v[(steps < s[ok].min()) | (steps > s[ok].max())] = np.nan
        rows.append(v)
    return np.asarray(steps), np.vstack(rows)


def constant_phase(run: Run) -> tuple[int, int]:
    """[first, last] logged step at which the LR equals its peak (the constant-LR phase the NQM calibrates on)."""
    tr = run.trajectory
    if "train/lr" not in tr or tr["train/lr"].size == 0:
        s = tr["eval/step"]
        return int(s[0]), int(s[-1])
    lr, st = np.asarray(tr["train/lr"], float), tr["train/step"]
    peak = np.nanmax(lr)
    on = np.flatnonzero(np.abs(lr - peak) <= 1e-9 * peak)
    # the longest run of consecutive peak-LR rows
    breaks = np.flatnonzero(np.diff(on) > 1)
    segs = np.split(on, breaks + 1)
    seg = max(segs, key=len)
    last = int(st[seg[-1]])
    if seg[-1] == lr.size - 1:   # LR never left the peak: the phase runs to the end of the run
        last = max(last, int(tr["eval/step"][-1]))
    return int(st[seg[0]]), last
