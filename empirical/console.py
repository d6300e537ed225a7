"""What ``python -m empirical.run`` prints (stdout; the files are the record, docs/run-series.md): a short header,
one progress row per regular evaluation with every average's test loss, and a final table of raw vs each average.

    empirical.run  preset digits  model resnet8 (78,042 parameters)  1,500 steps  (new run)
      data        digits: 1,437 train / 360 test images, 10 classes, 1x8x8; ...
      ...
    step      lr   train |  raw  raw_running_bn  ema_0.99 ... | acc_raw  elapsed      eta
    ...
    final evaluation at step 1,500 (test split, 360 images); * = lowest test loss
    ...
    next: python -m compare.report RUN_DIR --out RUN_DIR/report
    RUN_DIR

On a terminal a tqdm bar runs between the rows, started after the step-0 evaluation (so its rate and ETA are those
of training); piped (logs, batch jobs), the rows carry the ETA themselves, and a row without test losses is printed
after the first few steps and then at least once a minute, so a log shows progress long before the first
evaluation. The last stdout line stays the run directory (printed by empirical.train). No torch import here.
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

BEST_TWO_POINT = "best_2pt"  # progress column: the lowest test loss over the two-point averages defined so far
HEARTBEAT_S = 60.0           # piped output: a train-only row when nothing was printed for this long (seconds)


# ------------------------------------------------------------------------------------------------- helpers

def _is_two_point(variant: str) -> bool:
    """A two-point average (the name format has one home: theory.spec.variant_name / parse_variant_name)."""
    from theory.spec import TwoPoint, parse_variant_name

    try:
        return isinstance(parse_variant_name(variant), TwoPoint)
    except ValueError:          # raw_running_bn and other non-average names
        return False


def _num(x: Any, spec: str = ".4g") -> str:
    return f"{x:{spec}}" if isinstance(x, (int, float)) and math.isfinite(x) else "-"


def clock(seconds: float) -> str:
    """h:mm:ss (or m:ss under an hour); '-' when unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "-"
    s = int(round(seconds))
    h, m = divmod(s, 3600)
    m, s = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _steps(n: int) -> str:
    return f"{n:,}"


# --------------------------------------------------------------------------------------------------- header

def header(cfg, data: Mapping[str, Any], n_params: int, device: Mapping[str, Any], run_dir: Path | None,
           kind: str, start: int, variants: Sequence[str]) -> str:
    """The run in a few lines (everything else is in RUN_DIR/config.json). ``data``: DataBundle.describe();
    ``device``: Env.info(); ``kind``: new / resume / branch; ``start``: the step training starts from."""
    what = {"new": "new run", "resume": f"resumed at step {_steps(start)}",
            "branch": f"branch from step {_steps(start)} ({cfg.branch_schedule})"}.get(kind, kind)
    stop = f"{_steps(cfg.stop)} of {_steps(cfg.steps)} steps" if cfg.stop != cfg.steps else f"{_steps(cfg.steps)} steps"
    shape = f"{data.get('in_channels', '?')}x{data.get('image_size', '?')}x{data.get('image_size', '?')}"
    aug = (f"random shifts of up to {cfg.shift_augment} px" if cfg.shift_augment   # with_shift's long provenance
           else data.get("augmentation"))                                         # text is in config.json
    n_train = int(data.get("num_train", 0))
    per_epoch = max(n_train // max(cfg.batch_size, 1), 1) if n_train else 0
    epochs = f", {cfg.stop / per_epoch:.1f} epochs" if per_epoch else ""
    avgs = []
    if cfg.ema_decays:
        avgs.append(f"EMA {', '.join(f'{d:g}' for d in cfg.ema_decays)} per step from step {_steps(cfg.ema_start)}")
    if cfg.swa_start is not None:
        avgs.append(f"SWA from step {_steps(cfg.swa_start)}")
    if cfg.two_point_gaps:
        avgs.append(f"two-point gaps {','.join(str(g) for g in cfg.two_point_gaps)}")
    if cfg.n_points:
        avgs.append(f"{','.join(str(n) for n in cfg.n_points)}-point gap {cfg.n_point_gap}")
    avgs.append(f"BN {cfg.bn_mode}")
    rec = [f"eval every {cfg.eval_every}"]
    dense = cfg.dense_eval_steps()
    if dense:
        rec[0] += f" (test split every {cfg.eval_dense_every} in {dense[0]}-{dense[-1]})"
    for name, every, extra in (("bank", cfg.bank_every, f" ({cfg.bank_size}+{cfg.bank_size} batches)"),
                               ("probe", cfg.probe_every, ""), ("align", cfg.align_every, ""),
                               ("curv", cfg.curv_every, "")):
        rec.append(f"{name} every {every}{extra}" if every > 0 else f"{name} off")
    if cfg.sketch_dim:
        rec.append(f"sketch d={cfg.sketch_dim}")
    dev = device.get("device_name") or device.get("device", "?")
    dev += f" ({device.get('device')})" if device.get("device") not in (None, dev) else ""
    dev += f", {device.get('world_size', 1)} process{'es' if device.get('world_size', 1) != 1 else ''}"
    dev += ", bf16 autocast" if device.get("autocast") == "bf16" else ""
    lines = [
        f"empirical.run  preset {cfg.preset}  model {cfg.arch} ({n_params:,} parameters)  {stop}  ({what})",
        f"  data        {data.get('name', cfg.dataset)}: {n_train:,} train / {int(data.get('num_test', 0)):,} test "
        f"images, {data.get('num_classes', '?')} classes, {shape}" + (f"; {aug}" if aug and aug != "none" else ""),
        f"  training    SGD lr {cfg.peak_lr:g}, momentum {cfg.momentum:g}, weight decay {cfg.weight_decay:g}, "
        f"batch {cfg.batch_size}{epochs}",
        f"  schedule    {_schedule(cfg)}",
        f"  averages    {'; '.join(avgs)}  ({len(variants)} variants evaluated)",
        f"  recordings  {'; '.join(rec)}",
        f"  device      {dev}" + ("; TensorBoard scalars on" if getattr(cfg, "tensorboard", False) else ""),
        f"  output      {run_dir if run_dir is not None else '(not written on this rank)'}",
    ]
    return "\n".join(lines)


def _schedule(cfg) -> str:
    try:
        from empirical.schedules import schedule_text
        return schedule_text(cfg)
    except Exception:   # a schedule the one-line syntax cannot write: say its name, the config has the rest
        return cfg.schedule


# ------------------------------------------------------------------------------------------------- progress

class Progress:
    """Fixed-width progress rows (airbench's print_columns), plus a tqdm bar on a terminal.

    ``variants``: every variant of the run; the two-point averages share one column (their lowest test loss, the
    calibration instruments of compare.report, not averages one deploys), every other variant has its own. A '*'
    marks the lowest test loss of the row. Call :meth:`begin` after the step-0 evaluation, :meth:`step` after every
    update, :meth:`row` after each regular evaluation, :meth:`close` at the end."""

    def __init__(self, stop: int, variants: Sequence[str], on: bool = True, tty: bool | None = None,
                 early: int = 10, heartbeat_s: float = HEARTBEAT_S, eval_every: int = 0, stream=None):
        self.stop, self.on, self.eval_every = stop, on, eval_every
        self.stream = stream if stream is not None else sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self.early, self.heartbeat_s = early, heartbeat_s
        self.two_point = [v for v in variants if _is_two_point(v)]
        self.loss_cols = [v for v in variants if not _is_two_point(v)] + ([BEST_TWO_POINT]
                                                                                 if self.two_point else [])
        self.cols = ["step", "lr", "train", *self.loss_cols, "acc_raw", "elapsed", "eta"]
        self.widths = {c: max(len(c), 8) for c in self.cols}
        self.widths["step"] = max(len(_steps(stop)), 6)
        self.bar = None
        self.t0 = self.start = None
        self.last_print = time.perf_counter()
        self.losses: list[float] = []   # training losses since the last printed row (its "train" column)

    # layout -------------------------------------------------------------------------------------------
    def _line(self, cells: Mapping[str, str]) -> str:
        """One fixed-width line; a loss cell is its number right-aligned plus one mark column ('*' or blank)."""
        n = len(self.loss_cols)
        parts = []
        for c in self.cols:
            text = cells.get(c, "")
            if c in self.loss_cols:
                mark = "*" if text.endswith("*") else " "
                parts.append(f"{text.rstrip('*'):>{self.widths[c]}}{mark}")
            else:
                parts.append(f"{text:>{self.widths[c]}}")
        return "  ".join(parts[:3]) + " | " + "  ".join(parts[3:3 + n]) + " | " + "  ".join(parts[3 + n:])

    def header(self) -> str:
        n = len(self.loss_cols)
        span = sum(self.widths[c] + 1 for c in self.loss_cols) + 2 * (n - 1)
        left = sum(self.widths[c] for c in self.cols[:3]) + 4
        caption = " " * left + " | " + f"{' test loss (* = lowest of the row) ':-^{span}}" + " |"
        return caption + "\n" + self._line({c: c for c in self.cols})

    def _print(self, text: str) -> None:
        if not self.on:
            return
        (self.bar.write(text, file=self.stream) if self.bar is not None
         else print(text, file=self.stream, flush=True))
        self.last_print = time.perf_counter()

    def _timing(self, done: int) -> dict[str, str]:
        """elapsed since :meth:`begin` and the ETA at the rate measured since then (steps/s, evaluations included)."""
        if self.t0 is None:
            return {}
        el = time.perf_counter() - self.t0
        rate = (done - self.start) / el if el > 0 and done > self.start else math.nan
        return {"elapsed": clock(el), "eta": clock((self.stop - done) / rate) if rate > 0 else "-"}

    def _train_cell(self) -> str:
        finite = [x for x in self.losses if math.isfinite(x)]
        return _num(sum(finite) / len(finite)) if finite else "-"

    # events -------------------------------------------------------------------------------------------
    def begin(self, start: int, rec=None) -> None:
        """Start the clock (and the terminal bar) at ``start``: after the step-0 evaluation, so the rate, the ETA and
        the bar measure training; prints the header and, if ``rec`` has one, the evaluation already done."""
        self.start, self.t0 = start, time.perf_counter()
        if not self.on:
            return
        if self.tty:
            from tqdm import tqdm
            self.bar = tqdm(total=self.stop, initial=start, unit="step", dynamic_ncols=True, file=self.stream)
        self._print(self.header())
        if rec is not None and rec.last("eval").get("step") == start:
            self.row(start, rec.metrics_row().get("lr", math.nan), rec)

    def step(self, done: int, loss: float, lr: float) -> None:
        """After update ``done - 1``: the bar, and when piped the early / heartbeat row (no test losses)."""
        self.losses.append(loss)
        if not self.on:
            return
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            return
        if (self.eval_every > 0 and done % self.eval_every == 0) or done == self.stop:
            return                  # an evaluation row follows at once
        if done == self.start + self.early or time.perf_counter() - self.last_print >= self.heartbeat_s:
            self._print(self._line({"step": _steps(done), "lr": _num(lr, ".3g"), "train": self._train_cell(),
                                    **self._timing(done)}))
            self.losses = []

    def row(self, done: int, lr: float, rec) -> None:
        """The row of the evaluation at ``done`` (the recorder's last eval row)."""
        if not self.on:
            return
        ev = rec.last("eval")
        loss = {v: ev.get(f"test_loss_{v}", math.nan) for v in self.loss_cols if v != BEST_TWO_POINT}
        tp = [x for x in (ev.get(f"test_loss_{v}", math.nan) for v in self.two_point) if math.isfinite(x)]
        if self.two_point:
            loss[BEST_TWO_POINT] = min(tp) if tp else math.nan
        finite = {k: x for k, x in loss.items() if isinstance(x, float) and math.isfinite(x)}
        best = min(finite, key=finite.get) if len(finite) > 1 else None
        cells = {"step": _steps(done), "lr": _num(lr, ".3g"), "train": self._train_cell(),
                 "acc_raw": _num(ev.get("test_acc_raw", math.nan), ".4f"), **self._timing(done)}
        for k, x in loss.items():
            cells[k] = _num(x) + ("*" if k == best else "")
        self._print(self._line(cells))
        self.losses = []

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# -------------------------------------------------------------------------------------------------- summary

def summary(final: Mapping[str, Mapping[str, float]], step: int, n_test: int, run_dir: Path | None) -> str:
    """Raw vs each average at the last evaluation (summary.json's ``eval``): test loss, its change relative to raw,
    test accuracy; the lowest test loss marked; then the next command (compare.report on this run)."""
    rows = {v: s for v, s in final.items() if "loss" in s and math.isfinite(s["loss"])}
    best = min(rows, key=lambda v: rows[v]["loss"]) if rows else None
    raw = rows.get("raw", {}).get("loss", math.nan)
    w = max([len("variant"), *(len(v) for v in final)])
    lines = [f"final evaluation at step {_steps(step)} (test split, {n_test:,} images); * = lowest test loss",
             f"  {'variant':<{w}}  {'test_loss':>10}  {'vs raw':>8}  {'test_acc':>8}"]
    for v, s in final.items():
        loss, acc = s.get("loss", math.nan), s.get("acc", math.nan)
        rel = f"{100 * (loss / raw - 1):+.1f} %" if v != "raw" and math.isfinite(loss) and raw > 0 else ""
        lines.append(f"  {v:<{w}}  {_num(loss, '.5f'):>10}  {rel:>8}  {_num(acc, '.4f'):>8}"
                     + ("  * best" if v == best else ""))
    if run_dir is not None:
        lines.append(f"next: python -m compare.report {run_dir} --out {Path(run_dir) / 'report'}   "
                     f"(calibrate the model on this run's raw weights, predict every average; report.md there)")
    return "\n".join(lines)
