"""Accumulate a training run's series and write its run directory (design.md §3.6; names: docs/run-series.md).

Series are kept as plain Python lists (floats, lists of floats, ints), so the recorder's state goes into a
checkpoint loadable with ``torch.load(weights_only=True)`` and a resumed run continues the very same buffers.
Files are written with common.rundir's atomic writes: a crash or a failed write leaves the previous file.

    config.json, env.json        once at the start (config: the resolved RunConfig + averaging semantics)
    trajectory.npz, summary.json at every evaluation (status "running") and at the end
    metrics.csv                  one row appended per evaluation (the eval group), for ``tail -f``

Only the main rank constructs a Recorder with a directory; other ranks pass ``run_dir=None`` and nothing is written.
This module imports no torch: values arrive as Python or numpy numbers.
"""
from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from common import rundir

NAN = float("nan")


def _plain(v: Any) -> float | list:
    """A Python float, or a list of floats for a 1-D value (numpy arrays, numbers, sequences)."""
    if isinstance(v, (list, tuple, np.ndarray)):
        return [float(x) for x in np.asarray(v, dtype=np.float64).ravel()]
    return float(v)


def _nan_like(v: float | list) -> float | list:
    return [NAN] * len(v) if isinstance(v, list) else NAN


class Recorder:
    def __init__(self, run_dir: Path | None, eval_columns: Sequence[str] = ()):
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.groups: dict[str, dict[str, list]] = {}
        self.static: dict[str, list] = {}
        self.eval_columns = list(eval_columns)  # metrics.csv header after "step"; fixed for the whole run

    # ------------------------------------------------------------------------------------------- recording
    def log(self, group: str, step: int, **values: Any) -> None:
        """One row of ``group`` at optimiser step ``step``. A name first seen now is back-filled with NaN; a name
        missing from this row gets NaN (e.g. a variant not yet defined)."""
        g = self.groups.setdefault(group, {"step": []})
        n = len(g["step"])
        g["step"].append(int(step))
        for k, v in values.items():
            v = _plain(v)
            if k not in g:
                g[k] = [_nan_like(v) for _ in range(n)]
            g[k].append(v)
        for k, col in g.items():
            if len(col) == n:
                col.append(_nan_like(col[-1]) if col else NAN)

    def set_static(self, name: str, values: Sequence) -> None:
        self.static[name] = [float(v) if isinstance(v, float) else int(v) for v in values]

    def last(self, group: str) -> dict[str, Any]:
        g = self.groups.get(group)
        return {k: col[-1] for k, col in g.items()} if g and g["step"] else {}

    def trajectory(self) -> rundir.Trajectory:
        series: dict[str, np.ndarray] = {}
        for name, g in self.groups.items():
            for k, col in g.items():
                series[f"{name}/{k}"] = (np.asarray(col, dtype=np.int64) if k == "step"
                                         else np.asarray(col, dtype=np.float64))
        for k, v in self.static.items():
            series[f"{rundir.STATIC_GROUP}/{k}"] = np.asarray(v)
        return rundir.Trajectory(series)

    def final_eval(self, variants: Sequence[str]) -> dict[str, dict[str, float]]:
        """summary.json's ``eval``: {variant: {loss, acc, train_loss, train_acc}} at the last evaluation."""
        row = self.last("eval")
        out = {}
        for v in variants:
            vals = {"loss": row.get(f"test_loss_{v}", NAN), "acc": row.get(f"test_acc_{v}", NAN),
                    "train_loss": row.get(f"train_loss_{v}", NAN), "train_acc": row.get(f"train_acc_{v}", NAN)}
            if v == "raw" or any(math.isfinite(x) for x in vals.values()):
                out[v] = vals
        return out

    # ------------------------------------------------------------------------------------- checkpointing
    def state_dict(self) -> dict:
        return {"groups": {g: {k: list(c) for k, c in cols.items()} for g, cols in self.groups.items()},
                "static": {k: list(v) for k, v in self.static.items()}, "eval_columns": list(self.eval_columns)}

    def load_state_dict(self, state: Mapping) -> None:
        self.groups = {g: {k: list(c) for k, c in cols.items()} for g, cols in state["groups"].items()}
        self.static = {k: list(v) for k, v in state["static"].items()}
        self.eval_columns = list(state["eval_columns"])

    # ---------------------------------------------------------------------------------------------- files
    def write_start(self, config: Mapping[str, Any], command: list[str], env_extra: Mapping[str, Any]) -> None:
        if self.run_dir is None:
            return
        rundir.write_config(self.run_dir, "empirical", config, command=command)
        rundir.write_env(self.run_dir, env_extra)

    def write(self, status: str, steps: int, **summary: Any) -> None:
        """trajectory.npz then summary.json (a reader that sees the new summary also sees the new arrays)."""
        if self.run_dir is None:
            return
        self.trajectory().save(self.run_dir / "trajectory.npz")
        rundir.write_summary(self.run_dir, status, steps, **summary)

    def _csv_row(self, row: Mapping[str, Any]) -> list:
        return [row.get("step", "")] + [("" if not isinstance(row.get(c), float) or math.isnan(row[c])
                                         else f"{row[c]:.6g}") for c in self.eval_columns]

    def append_metrics(self) -> None:
        """Append the last eval row to metrics.csv (header first if the file is new)."""
        if self.run_dir is None:
            return
        path = self.run_dir / "metrics.csv"
        buf = io.StringIO()
        w = csv.writer(buf)
        if not path.exists():
            w.writerow(["step", *self.eval_columns])
        w.writerow(self._csv_row(self.last("eval")))
        with open(path, "a", newline="") as f:
            f.write(buf.getvalue())
            f.flush()
            os.fsync(f.fileno())

    def rewrite_metrics(self) -> None:
        """metrics.csv from the buffers (after a resume: drops rows written after the checkpoint)."""
        if self.run_dir is None:
            return
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["step", *self.eval_columns])
        g = self.groups.get("eval", {"step": []})
        for i in range(len(g["step"])):
            w.writerow(self._csv_row({k: col[i] for k, col in g.items()}))
        rundir.atomic_write_bytes(self.run_dir / "metrics.csv", buf.getvalue().encode())
