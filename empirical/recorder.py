"""Accumulate a training run's series and write its run directory (series names: docs/run-series.md).

Series are kept as plain Python lists (floats, lists of floats, ints), so the recorder's state goes into a
checkpoint loadable with ``torch.load(weights_only=True)`` and a resumed run continues the very same buffers.
Files are written with common.rundir's atomic writes: a crash or a failed write leaves the previous file.

    config.json, env.json        once at the start (config: the resolved RunConfig + averaging semantics)
    trajectory.npz, summary.json at every evaluation (status "running") and at the end
    metrics.csv                  one row per evaluation (the eval group, with the LR and the mean training loss since
                                 the previous row), appended for ``tail -f``; rewritten atomically with a wider header
                                 when a new series shows up (a Recorder accepts new series at any time)
    tensorboard/                 optional (``tensorboard=True``): the same series as TensorBoard scalars

Only the main rank constructs a Recorder with a directory; other ranks pass ``run_dir=None`` and nothing is written.
This module imports no torch (the optional TensorBoard writer imports ``torch.utils.tensorboard`` when first used):
values arrive as Python or numpy numbers.

From a user's own loop (no declaration needed; every name is optional but ``test_loss_<variant>``)::

    rec = Recorder(run_dir)
    rec.write_start({"lr": 0.1}, command=sys.argv)          # config.json, env.json
    rec.log("train", step, loss=loss.item(), lr=lr)         # every step (or every few)
    rec.log("eval", step, test_loss_raw=..., test_acc_raw=..., **{"test_loss_ema_0.999": ...})
    rec.append_metrics(); rec.write("running", step, eval=rec.final_eval())
"""
from __future__ import annotations

import bisect
import csv
import io
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from common import rundir

NAN = float("nan")
# metrics.csv columns before the eval series: the LR of the last update before the row and the mean mini-batch
# training loss since the previous row (from the "train" group's ``lr`` and ``loss``; docs/run-series.md)
TRAIN_COLUMNS = ("lr", "train_loss")
EVAL_PREFIXES = ("test_loss", "test_acc", "train_loss", "train_acc")   # eval/<prefix>_<variant>


def _plain(v: Any) -> float | list:
    """A Python float, or a list of floats for a 1-D value (numpy arrays, numbers, sequences)."""
    if isinstance(v, (list, tuple, np.ndarray)):
        return [float(x) for x in np.asarray(v, dtype=np.float64).ravel()]
    return float(v)


def _nan_like(v: float | list) -> float | list:
    return [NAN] * len(v) if isinstance(v, list) else NAN


def _finite(v: Any) -> bool:
    return isinstance(v, float) and math.isfinite(v)


def tensorboard_tag(column: str) -> str:
    """TensorBoard tag of a metrics.csv column: ``test_loss_<variant>`` -> ``test_loss/<variant>`` (one chart section
    per metric, every variant beside the others), ``lr`` -> ``train/lr``, ``train_loss`` -> ``train/loss``; any other
    column keeps its name (docs/run-series.md, "TensorBoard")."""
    if column in TRAIN_COLUMNS:
        return {"lr": "train/lr", "train_loss": "train/loss"}[column]
    for prefix in EVAL_PREFIXES:
        if column.startswith(prefix + "_"):
            return f"{prefix}/{column[len(prefix) + 1:]}"
    return column


class Recorder:
    """Series of one run, kept in memory and written to ``run_dir`` (module docstring).

    ``eval_columns``: optional metrics.csv columns (after ``step, lr, train_loss``) in the order wanted; any eval
    series logged later that is not among them is appended to the header (metrics.csv is then rewritten atomically).
    ``tensorboard``: also write every metrics.csv series to ``run_dir/tensorboard/`` (needs the ``tensorboard``
    package, the optional extra of the same name)."""

    def __init__(self, run_dir: Path | None, eval_columns: Sequence[str] = (), *, tensorboard: bool = False):
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.groups: dict[str, dict[str, list]] = {}
        self.static: dict[str, list] = {}
        self.eval_columns = list(eval_columns)  # metrics.csv header after "step, lr, train_loss"; grows, never shrinks
        self.tensorboard = bool(tensorboard)
        self._csv_rows: int | None = None  # eval rows already in metrics.csv under the current header; None: unknown
        self._tb = None                    # the SummaryWriter, created at the first metrics row
        self._tb_rows = 0                  # eval rows already written to TensorBoard by this process

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

    def variants(self) -> list[str]:
        """Every variant with an eval series (``eval/test_loss_<variant>`` etc.), in first-logged order."""
        out: list[str] = []
        for k in self.groups.get("eval", {}):
            for prefix in EVAL_PREFIXES:
                if k.startswith(prefix + "_") and k[len(prefix) + 1:] not in out:
                    out.append(k[len(prefix) + 1:])
        return out

    def final_eval(self, variants: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
        """summary.json's ``eval``: {variant: {loss, acc, train_loss, train_acc}} at the last evaluation, each key
        present only where that value is finite (a variant evaluated on the test split alone, or logged with a loss
        and no accuracy, has no null entries). ``raw`` is always present; other variants only once they have a
        value. ``variants``: default every variant logged (:meth:`variants`)."""
        row = self.last("eval")
        out = {}
        for v in (self.variants() if variants is None else variants):
            vals = {key: row.get(f"{col}_{v}", NAN) for key, col in
                    (("loss", "test_loss"), ("acc", "test_acc"), ("train_loss", "train_loss"),
                     ("train_acc", "train_acc"))}
            vals = {k: x for k, x in vals.items() if _finite(x)}
            if v == "raw" or vals:
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
        self._csv_rows = None   # metrics.csv may hold rows written after the checkpoint: rewrite it next time

    # ---------------------------------------------------------------------------------------------- files
    def write_start(self, config: Mapping[str, Any], command: list[str] | None = None,
                    env_extra: Mapping[str, Any] | None = None) -> None:
        """config.json (``config`` and the ``command``, default ``sys.argv``) and env.json (versions, git; plus
        ``env_extra``, e.g. the device)."""
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

    # metrics.csv ---------------------------------------------------------------------------------------
    def metrics_columns(self) -> list[str]:
        """metrics.csv header: step, lr, train_loss, then the eval series (declared ones first, then new ones in
        the order they were first logged)."""
        self._widen()
        return ["step", *TRAIN_COLUMNS, *self.eval_columns]

    def _widen(self) -> bool:
        """Add eval series not yet in the header; True if the header grew."""
        new = [k for k in self.groups.get("eval", {}) if k != "step" and k not in self.eval_columns]
        self.eval_columns.extend(new)
        return bool(new)

    def metrics_row(self, i: int = -1) -> dict[str, Any]:
        """Row ``i`` of metrics.csv as numbers (NaN where empty): the eval row i, ``lr`` = train/lr of the last
        update before it, ``train_loss`` = mean train/loss over updates t with s_prev <= t < s (s this row's step,
        s_prev the previous row's; none before the first row)."""
        ev = self.groups.get("eval", {"step": []})
        n = len(ev["step"])
        if not n:
            return {}
        i = i % n
        row = {k: col[i] for k, col in ev.items()}
        tr = self.groups.get("train", {"step": []})
        hi = bisect.bisect_left(tr["step"], ev["step"][i])                        # train rows with t < s
        lo = bisect.bisect_left(tr["step"], ev["step"][i - 1]) if i > 0 else hi   # ... and t >= s_prev
        losses = [x for x in tr.get("loss", [])[lo:hi] if isinstance(x, float)]
        row["train_loss"] = sum(losses) / len(losses) if losses else NAN
        row["lr"] = tr["lr"][hi - 1] if hi > 0 and "lr" in tr else NAN
        return row

    def _csv_row(self, row: Mapping[str, Any], columns: Sequence[str]) -> list:
        return [row.get("step", "")] + [f"{row[c]:.6g}" if _finite(row.get(c)) else "" for c in columns[1:]]

    def append_metrics(self) -> None:
        """Bring metrics.csv up to date with the eval rows: append the rows not yet written, or rewrite the whole
        file atomically when the header grew (a new series), the file is missing or its content is unknown (after
        :meth:`load_state_dict`). Then the same rows to TensorBoard if enabled."""
        if self.run_dir is None:
            return
        path = self.run_dir / "metrics.csv"
        n = len(self.groups.get("eval", {"step": []})["step"])
        if self._widen() or self._csv_rows is None or not path.exists() or self._csv_rows > n:
            self.rewrite_metrics()
            return
        columns = self.metrics_columns()
        buf = io.StringIO()
        w = csv.writer(buf)
        for i in range(self._csv_rows, n):
            w.writerow(self._csv_row(self.metrics_row(i), columns))
        with rundir.naming(path), open(path, "a", newline="") as f:
            f.write(buf.getvalue())
            f.flush()
            os.fsync(f.fileno())
        self._csv_rows = n
        self._tensorboard_rows()

    def rewrite_metrics(self) -> None:
        """metrics.csv from the buffers, atomically (after a resume: drops rows written after the checkpoint)."""
        if self.run_dir is None:
            return
        columns = self.metrics_columns()
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(columns)
        n = len(self.groups.get("eval", {"step": []})["step"])
        for i in range(n):
            w.writerow(self._csv_row(self.metrics_row(i), columns))
        rundir.atomic_write_bytes(self.run_dir / "metrics.csv", buf.getvalue().encode())
        self._csv_rows = n
        self._tensorboard_rows()

    # TensorBoard ---------------------------------------------------------------------------------------
    def _tensorboard_rows(self) -> None:
        """Write the eval rows not yet in TensorBoard. The first write of a process writes the whole history with
        ``purge_step`` at its first step, so TensorBoard hides what an earlier (crashed or resumed) process wrote
        and shows each step once."""
        if not self.tensorboard or self.run_dir is None:
            return
        n = len(self.groups.get("eval", {"step": []})["step"])
        if self._tb_rows >= n:
            return
        if self._tb is None:
            from torch.utils.tensorboard import SummaryWriter   # optional extra 'tensorboard'
            self._tb = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=self.groups["eval"]["step"][0])
        columns = self.metrics_columns()[1:]
        for i in range(self._tb_rows, n):
            row = self.metrics_row(i)
            for c in columns:
                if _finite(row.get(c)):
                    self._tb.add_scalar(tensorboard_tag(c), row[c], global_step=int(row["step"]))
        self._tb.flush()
        self._tb_rows = n

    def close(self) -> None:
        """Close the TensorBoard writer (if any); the files stay valid without it (each row is flushed)."""
        if self._tb is not None:
            self._tb.close()
            self._tb = None
