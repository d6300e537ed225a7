"""A run directory from your own training loop, readable by ``compare.report`` and ``figures.build``
(docs/run-series.md; the same files ``python -m empirical.run`` writes).

:class:`RunWriter` owns a :class:`~empirical.recorder.Recorder` and writes config.json with what compare/ reads:
the LR and momentum (the NQM is calibrated with them, theory.md §2.6), every average's timing (its start and
period: compare rebuilds each average's weights over iterates from them, theory.md §3.8a), the cadences of the
measurements, and ``source_api: "library"``. What each analysis of ``compare.report`` needs (the rest is "not
testable here" in its claim table):

=====================================  =============================================================================
analysis                               recordings
=====================================  =============================================================================
calibration on D(τ) (the default)      TwoPoint averages at ≥ 5 lags, evaluated densely in the constant-LR window
calibration on probes (fallback)       ≥ 2 :class:`~empirical.probes.OneStepProbe` rows in that window
predicted vs observed gain per average ``evaluate`` rows of raw and the averages; ``train`` rows with the LR
dip after use (figure)                 a :class:`~empirical.bank.FixedBatchBank` with batches trained on
top curvature, alignment               :class:`~empirical.probes.TopCurvature`, ``GradientAlignment``
=====================================  =============================================================================

    run = RunWriter("runs/mine", opt, averages=avg, measurements=[bank, probe], bn_batches=bn_batches)
    ...  # in the loop, with `step` optimiser updates done:
    run.measure(step, model); run.train(step, loss, lr); run.evaluate(step, model, test=test_batches)
    run.close()                                   # trajectory.npz + summary.json (status ok)

A first run that calibrates: :func:`default_plan` gives the two-point lag grid, the dense evaluation window and the
EMA / SWA starts that ``compare.report`` needs (``WeightAverages(model, [EMA(0.99)], plan=plan)`` adds the lags it
lacks; evaluate at ``plan.dense_steps()`` too). The optimiser is recorded with :func:`optimizer_config`
(``RunWriter(out, opt)``): its type and hyperparameters, and for anything but heavy-ball SGD a null
momentum and the sentence ``optimizer_assumption`` (the NQM assumes heavy-ball SGD, theory.md §2.6).
"""
from __future__ import annotations

import inspect
import itertools
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from common import rundir
from empirical.averaging import SEMANTIC, WeightAverages
from empirical.bank import FixedBatchBank
from empirical.bn import RAW_RUNNING_BN, evaluated_variants
from empirical.measure import evaluate
from empirical.probes import Measurement
from empirical.recorder import Recorder
from theory.spec import EMA, SWA, Averaging, TwoPoint

SPLITS = ("test", "train")     # eval/<split>_loss_<variant>: compare reads "test" by default, "train" with --split
STATE_FORMAT = 1               # RunWriter.state_dict layout

# ------------------------------------------------------------------------------------------------ the optimiser

HEAVY_BALL = "the NQM assumes heavy-ball SGD (torch.optim.SGD, dampening 0, no Nesterov; theory.md §2.6)"


def _plain_value(v: Any) -> Any:
    """A hyperparameter as plain JSON-able Python: tensors as numbers (or lists), tuples as lists."""
    if isinstance(v, torch.Tensor):
        return v.item() if v.numel() == 1 else v.tolist()
    if isinstance(v, (bool, int, float, str)) or v is None:
        return v
    if isinstance(v, (np.integer, np.floating)):
        return v.item()
    if isinstance(v, (list, tuple)):
        return [_plain_value(x) for x in v]
    return repr(v)


def optimizer_config(optimizer: torch.optim.Optimizer) -> dict:
    """What config.json records about the optimiser: ``optimizer`` (its class name), ``optimizer_class`` (module
    path), ``optimizer_hparams`` (every key of ``param_groups[0]`` but ``params``: lr, momentum, betas,
    weight_decay, ...), ``optimizer_param_groups`` (their number; ``optimizer_groups_differ`` lists the
    hyperparameters on which later groups differ from the first), ``lr`` (the base LR: ``initial_lr`` when an LR
    scheduler set one, else ``lr``), ``momentum`` μ and ``optimizer_assumption``.

    The NQM (theory.md §2.6) is heavy-ball SGD with LR λ and momentum μ. For torch.optim.SGD ``momentum`` is its μ
    (0.0 without momentum); with dampening or Nesterov the update is not heavy-ball and ``optimizer_assumption``
    says so. For any other optimiser (Adam, AdamW, ...) ``momentum`` is None (null in config.json: never a
    silent μ = 0) and ``optimizer_assumption`` names the optimiser and the assumption."""
    opt = getattr(optimizer, "_optimizer", optimizer)      # Lightning's LightningOptimizer wraps the torch one
    groups = list(opt.param_groups)
    if not groups:
        raise ValueError(f"{type(opt).__name__} has no parameter groups")
    hp = {k: _plain_value(v) for k, v in groups[0].items() if k != "params"}
    differ = sorted({k for g in groups[1:] for k, v in g.items()
                     if k != "params" and _plain_value(v) != hp.get(k)})
    name = type(opt).__name__
    lr = hp.get("initial_lr", hp.get("lr"))
    out: dict[str, Any] = {"optimizer": name, "optimizer_class": f"{type(opt).__module__}.{type(opt).__qualname__}",
                           "optimizer_hparams": hp, "optimizer_param_groups": len(groups),
                           "lr": float(lr) if isinstance(lr, (int, float)) else None}
    if differ:
        out["optimizer_groups_differ"] = differ
    if isinstance(opt, torch.optim.SGD):
        mu = hp.get("momentum") or 0.0
        out["momentum"] = float(mu)
        odd = [f"{k}={hp[k]}" for k, bad in (("dampening", bool(hp.get("dampening"))),
                                              ("nesterov", bool(hp.get("nesterov")))) if bad]
        out["optimizer_assumption"] = (f"{HEAVY_BALL}; this run used SGD with {', '.join(odd)}: momentum is its "
                                       f"μ, the update is not heavy-ball" if odd and mu else None)
    else:
        out["momentum"] = None
        out["optimizer_assumption"] = (f"{HEAVY_BALL}; this run used {name} "
                                       f"({', '.join(f'{k}={hp[k]}' for k in ('lr', 'betas', 'momentum') if k in hp)}"
                                       f"), so momentum is recorded as null: its lr is not the NQM's λ and it has "
                                       f"no heavy-ball μ")
    return out


# ------------------------------------------------------------------------------------------ the recording plan

# the calibration's rules (compare/calibrate.py, compare/pairs.py): the window is the last half of the constant-LR
# phase, a lag is used only if the window is >= WINDOW_PER_LAG times it, and D(τ) is fitted on >= 5 lags here
WINDOW_FRACTION, WINDOW_PER_LAG, MIN_LAGS, TARGET_LAGS = 0.5, 3, 5, 6
LAG_OVER_CADENCE = 20          # longest lag / dense cadence: ~20 weight copies held, ~60 dense evaluations
EMA_CHOICES = (0.9, 0.99, 0.999, 0.9999)


@dataclass(frozen=True)
class RecordingPlan:
    """What a run records so that ``compare.report`` can calibrate on it (:func:`default_plan` makes one).

    Steps count optimiser updates. ``window`` [lo, hi]: the calibration window, the last half of the constant-LR
    phase ``[constant_from, constant_until]``. ``lags``: the two-point gaps k (multiples of ``dense_every``, the
    longest at most a third of the window). ``dense_every``: every this many steps in ``[dense_from,
    dense_until]`` the TEST split of every variant is evaluated (both ends of every in-window pair are then
    measured). ``eval_every``: the regular evaluation (every split), a multiple of ``dense_every``.
    ``ema_start``, ``ema_decays``, ``swa_start``: the EMAs and the SWA used when no averages are given (SWA over
    the window). ``lr``, ``momentum``: what the plan was made for (the shortest lag is about the heavy-ball memory
    1/(1−μ) steps)."""

    total_steps: int
    lr: float
    momentum: float | None
    constant_from: int
    constant_until: int
    window: tuple[int, int]
    lags: tuple[int, ...]
    dense_every: int
    dense_from: int
    dense_until: int
    eval_every: int
    ema_start: int
    ema_decays: tuple[float, ...]
    swa_start: int

    def dense_steps(self) -> list[int]:
        """Steps of the dense evaluation (test split), ascending."""
        return list(range(self.dense_from, self.dense_until + 1, self.dense_every))

    def is_dense(self, step: int) -> bool:
        return self.dense_from <= step <= self.dense_until and (step - self.dense_from) % self.dense_every == 0

    def averages(self) -> list[Averaging]:
        """The plan's own averages: its EMAs, SWA over the window, and a TwoPoint per lag."""
        return ([EMA(d, start=self.ema_start) for d in self.ema_decays] + [SWA(start=self.swa_start)]
                + [TwoPoint(k) for k in self.lags])

    def complete(self, averages: Sequence[Averaging]) -> list[Averaging]:
        """``averages`` plus a TwoPoint for each plan lag they lack (nothing else is added or changed)."""
        given = [averages] if not isinstance(averages, (list, tuple)) else list(averages)
        have = {a.gap for a in given if isinstance(a, TwoPoint)}
        return given + [TwoPoint(k) for k in self.lags if k not in have]

    def config(self) -> dict:
        """Plain values for config.json (``recording_plan``) and checkpoints."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_config(cls, c: Mapping) -> "RecordingPlan":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in c.items()})


def default_plan(total_steps: int, lr: float, momentum: float | None = 0.0, constant_until: int | None = None, *,
                 constant_from: int = 0) -> RecordingPlan:
    """The one default recording plan of the library and the Lightning callback: a run recorded with it can be
    calibrated by ``compare.report`` on D(τ) (compare/calibrate.py).

    ``total_steps``: optimiser updates of the run; ``lr``, ``momentum``: the optimiser's (None for a non-SGD
    optimiser); ``constant_until``: the first update with a lower LR (default ``total_steps``: a constant LR);
    ``constant_from``: the first update at the peak LR (after a warmup). With b the last peak-LR step (compare
    logs update s with its LR), the window is [lo, b], lo = constant_from + ½(b − constant_from), W = b − lo:

    * lags: TARGET_LAGS (6, at least 5) roughly geometric gaps from max(c, ~1/(1 − μ)) to ⌊W/3⌋, multiples of c;
    * dense evaluation: the test split every c = max(1, ⌊W/3⌋ // 20) steps from lo to b (≈ 60 evaluations of every
      variant whatever the run length; the two-point averages hold ≈ 21 weight copies at a time);
    * regular evaluation every ≈ total_steps/20 steps (a multiple of c);
    * EMAs from constant_from + (lo − constant_from)/5, decays from (0.9, 0.99, 0.999, 0.9999) with time constant
      1/(1 − γ) ≤ W (the two longest), SWA from lo.

    Raises ValueError when W < 15 (five lags up to a third of the window need it)."""
    T = int(total_steps)
    if isinstance(total_steps, bool) or T != total_steps or T < 1:
        raise ValueError(f"total_steps must be an integer >= 1 (optimiser updates), got {total_steps!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    if momentum is not None and not (isinstance(momentum, (int, float)) and 0 <= momentum < 1):
        raise ValueError(f"momentum must be in [0, 1) or None (not heavy-ball SGD), got {momentum!r}")
    C = T if constant_until is None else int(constant_until)
    a = int(constant_from)
    if not 0 <= a < C <= T:
        raise ValueError(f"need 0 <= constant_from < constant_until <= total_steps, got {a}, {C}, {T}")
    b = T if C == T else C - 1
    lo = int(a + WINDOW_FRACTION * (b - a))
    W = b - lo
    longest = W // WINDOW_PER_LAG
    if longest < MIN_LAGS:
        raise ValueError(f"the constant-LR phase [{a}, {C}] of this {T}-step run is too short to calibrate: the window "
                         f"(its last half, {W} steps) must be at least {MIN_LAGS * WINDOW_PER_LAG} steps for "
                         f"{MIN_LAGS} two-point lags up to a third of it")
    c = max(1, longest // LAG_OVER_CADENCE)
    memory = round(1.0 / (1.0 - momentum)) if momentum else 1
    shortest = max(c, min(memory, longest // 8))
    lags: list[int] = []
    for n in range(TARGET_LAGS, 4 * TARGET_LAGS):
        lags = sorted({max(c, int(x // c) * c) for x in np.geomspace(shortest, longest, n)})
        if len(lags) >= TARGET_LAGS:
            break
    if len(lags) < MIN_LAGS:      # pragma: no cover - longest >= 5c always leaves five multiples of c
        lags = sorted({c * i for i in range(1, longest // c + 1)})[-TARGET_LAGS:]
    dense_from = -(-lo // c) * c
    eval_every = max(c, round(T / 20 / c) * c)
    ema_start = a + (lo - a) // 5
    decays = tuple(d for d in EMA_CHOICES if 1.0 / (1.0 - d) <= W)[-2:] or EMA_CHOICES[:1]
    return RecordingPlan(total_steps=T, lr=float(lr), momentum=None if momentum is None else float(momentum),
                         constant_from=a, constant_until=C, window=(lo, b), lags=tuple(lags), dense_every=c,
                         dense_from=dense_from, dense_until=b, eval_every=eval_every, ema_start=ema_start,
                         ema_decays=decays, swa_start=lo)


def averaging_config(averages: WeightAverages | None) -> dict:
    """What RunWriter records about the averages: ``averaging`` (WeightAverages.config(); its ``specs`` hold each
    variant as its theory.spec average, the record compare/ reads), ``eval_every`` and ``average_buffers``
    (``variants`` is RunWriter's own: the evaluated variants). ``averaging`` is None without averages."""
    if averages is None:
        return {"averaging": None}
    c = averages.config()
    return {"averaging": c, "eval_every": c["eval_every"], "average_buffers": c["average_buffers"]}


def _same_averages(block: Any) -> Any:
    """What two ``averaging`` records must share for a resume: the averages (specs), the layout of their state and
    the plan, not the wording of the storage description; so a state saved while the record also held the averages
    as flat keys (ema_start, two_point_gaps, ...) still resumes."""
    if not isinstance(block, Mapping):
        return block
    return {k: block.get(k) for k in (*SEMANTIC, "recording_plan")}


def _device_of(model: nn.Module):
    """Where ``model`` lives (its first parameter or buffer), None for a model without tensors: the device the
    evaluation and BN batches are moved to."""
    for t in itertools.chain(model.parameters(), model.buffers()):
        return t.device
    return None


def _optimizer_record(optimizer) -> dict:
    """config.json's optimiser keys from a torch optimiser (:func:`optimizer_config`) or a mapping with the peak
    ``lr`` and the heavy-ball ``momentum`` (default 0.0; None: not heavy-ball SGD) of a loop without one."""
    if isinstance(optimizer, Mapping):
        extra = sorted(set(optimizer) - {"lr", "momentum"})
        if extra or "lr" not in optimizer:
            raise ValueError(f"optimizer as a mapping holds 'lr' (the peak LR) and optionally 'momentum'; got keys "
                             f"{sorted(optimizer)}")
        opt = {"lr": optimizer["lr"], "momentum": optimizer.get("momentum", 0.0)}
    elif isinstance(getattr(optimizer, "_optimizer", optimizer), torch.optim.Optimizer):
        opt = optimizer_config(optimizer)
    else:
        raise ValueError(f"optimizer must be a torch optimiser or {{'lr': ..., 'momentum': ...}}, got "
                         f"{type(optimizer).__name__}")
    lr, mu = opt["lr"], opt["momentum"]
    if isinstance(lr, bool) or not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0 (the peak LR), got {lr!r}")
    if mu is not None and (isinstance(mu, bool) or not (isinstance(mu, (int, float)) and 0 <= mu < 1)):
        raise ValueError(f"momentum must be in [0, 1) (None: not heavy-ball SGD), got {mu!r}")
    return {**opt, "lr": float(lr), "momentum": None if mu is None else float(mu)}


class RunWriter:
    """Writes one run directory for a training loop that is not ``empirical.run`` (module docstring).

    ``out``: the directory (created; must be empty or absent), or None for ``runs/empirical/<stamp>-library-<rand>``.
    ``optimizer``: your torch optimiser, recorded by :func:`optimizer_config` (type, every hyperparameter, its base
    LR and, for torch.optim.SGD, its μ; None, recorded as null, for anything else), or for a loop without one
    ``{"lr": peak LR, "momentum": μ}`` (momentum default 0.0; None records "not heavy-ball SGD"). Log the LR of every
    step with :meth:`train`. ``averages``: your WeightAverages (its variants are evaluated by :meth:`evaluate`; its
    recording plan, if any, is recorded as ``recording_plan``). ``measurements``: bank / probe / alignment /
    curvature objects; they get this writer's recorder, so their ``measure`` results land in the run.
    ``bn_batches``: a few un-augmented training batches; every variant, raw included, is evaluated with BatchNorm
    statistics recomputed on them (docs/run-series.md), and the raw weights with their own running statistics are
    the variant ``raw_running_bn``. ``config``: anything else to record (the seed, batch size, model name, ...; its
    keys override the recorded ones). ``call_fn(model, batch)``: how a BN batch is fed to the model (default
    ``model(batch[0])``; empirical.bn.recompute_bn). ``loss_fn(logits, targets)``: the mean loss :meth:`evaluate`
    reports (default cross-entropy; accuracy is argmax agreement). ``tensorboard``: also write the series as
    TensorBoard scalars (extra ``tensorboard``). Batches are moved to the model's device.

    A run saved with a checkpoint (:meth:`state_dict`) continues with :meth:`resume`.
    """

    def __init__(self, out: str | Path | None, optimizer: torch.optim.Optimizer | Mapping[str, Any], *,
                 averages: WeightAverages | None = None, measurements: Sequence[Measurement] = (),
                 bn_batches: Sequence | None = None, config: Mapping[str, Any] | None = None,
                 call_fn: Callable | None = None,
                 loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                 tensorboard: bool = False):
        self._take(averages, measurements, bn_batches, call_fn, loss_fn)
        opt = _optimizer_record(optimizer)
        plan = getattr(averages, "plan", None)
        self.config = {"source_api": "library", "lr": opt["lr"], "momentum": opt["momentum"],
                       "seed": None,   # ``config={"seed": ...}`` records it
                       **{k: v for k, v in opt.items() if k not in ("lr", "momentum")},
                       **self._recording(), "recording_plan": plan.config() if plan is not None else None,
                       **{k: v for m in self.measurements for k, v in m.config().items()}, **dict(config or {})}
        self.run_dir = rundir.new_run_dir("empirical", "library", out=out)
        self._open(tensorboard)
        self._write_start()

    @classmethod
    def resume(cls, state: Mapping[str, Any], out: str | Path | None = None, *,
               averages: WeightAverages | None = None, measurements: Sequence[Measurement] = (),
               bn_batches: Sequence | None = None, call_fn: Callable | None = None,
               loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
               tensorboard: bool = False) -> "RunWriter":
        """Continue the run a :meth:`state_dict` was saved from, with the averages, measurements and bn_batches it
        was started with (a different recording is refused). The optimiser and config are the state's. The run goes
        on in ``out`` (default: the directory it was written to), which may already hold this run's files (its
        config.json must be this run's; it is kept), or is a new directory that gets the run's config and history;
        the recorded series continue from the state, rows written after it are dropped at the next write."""
        self = cls.__new__(cls)
        self._take(averages, measurements, bn_batches, call_fn, loss_fn)
        self.run_dir = self._reopen(out, state)
        self._open(tensorboard)
        self.recorder.load_state_dict(state["recorder"])
        self._step = int(state["step"])
        self._t0 -= float(state.get("wall_s", 0.0))
        banks = [m for m in self.measurements if isinstance(m, FixedBatchBank)]
        for m, used in zip(banks, state.get("bank_used_at", [])):
            m.used_at = [int(u) for u in used]
        if not (self.run_dir / "config.json").exists():      # a new directory gets the run's config and history
            self._write_start()
        return self

    def _take(self, averages, measurements, bn_batches, call_fn, loss_fn) -> None:
        self.averages, self.measurements = averages, list(measurements)
        self.bn_batches = None if bn_batches is None else list(bn_batches)
        self.call_fn, self.loss_fn = call_fn, loss_fn
        self.bn_mode = "recompute" if self.bn_batches is not None else (
            "averaged" if averages is not None and averages.average_buffers else "raw")
        self.variants = evaluated_variants(self.bn_mode, averages.all_names() if averages is not None else [])

    def _write_start(self) -> None:
        self.recorder.write_start(self.config, list(sys.argv),
                                  {"torch": torch.__version__, "api": "empirical library (RunWriter)"})

    def _recording(self) -> dict:
        """What this writer records: the BN procedure, the averages and the evaluated variants (a resume must
        record the same)."""
        return {"bn_mode": self.bn_mode, "bn_batches": None if self.bn_batches is None else len(self.bn_batches),
                **averaging_config(self.averages), "variants": self.variants}

    def _open(self, tensorboard: bool) -> None:
        columns = [f"{s}_{m}_{v}" for v in self.variants for s in SPLITS for m in ("loss", "acc")]
        self.recorder = (Recorder(self.run_dir, columns, tensorboard=True) if tensorboard   # the extra tensorboard
                         else Recorder(self.run_dir, columns))
        self._t0, self._step = time.perf_counter(), 0
        for m in self.measurements:
            m.recorder = self.recorder
            if hasattr(m, "publish"):
                m.publish()                       # the bank's static/bank_used_at from the start

    def _reopen(self, out, resume: Mapping[str, Any]) -> Path:
        """The directory a resumed run continues in; takes the recorded config over (it is the run's)."""
        if resume.get("format") != STATE_FORMAT:
            raise ValueError(f"not a RunWriter state (format {STATE_FORMAT}); got keys {list(resume)[:8]}")
        path = Path(resume["run_dir"] if out is None else out)
        saved = json.loads(rundir.to_json_text(dict(resume["config"])))
        mine = json.loads(rundir.to_json_text(self._recording()))
        saved_avg, mine_avg = (_same_averages(c.get("averaging")) for c in (saved, mine))
        diff = sorted([k for k in ("variants", "bn_mode") if saved.get(k) != mine.get(k)]
                      + (["averaging"] if saved_avg != mine_avg else []))
        if diff:
            raise ValueError(f"resuming {path}: this run's recording differs from the checkpoint's in {diff}; "
                             f"resume with the averages, bn_batches and plan it was started with")
        self.config = dict(resume["config"])
        if (path / "config.json").exists():
            there = rundir.read_config(path)
            if there != saved:
                raise ValueError(f"resuming into {path}: its config.json is not this run's (another run's "
                                 f"directory?); pass a new or empty out, or the run's own directory")
        else:
            rundir.refuse_used(path)
            path.mkdir(parents=True, exist_ok=True)
        return path

    def state_dict(self) -> dict:
        """Plain Python only (``torch.load(weights_only=True)``): the run directory, its config, the recorded series,
        the updates done and the bank's used steps. Continue with ``RunWriter.resume(state, ...)``."""
        return {"format": STATE_FORMAT, "run_dir": str(self.run_dir), "config": self.config,
                "recorder": self.recorder.state_dict(), "step": self._step,
                "wall_s": time.perf_counter() - self._t0,
                "bank_used_at": [list(m.used_at) for m in self.measurements if isinstance(m, FixedBatchBank)]}

    # ----------------------------------------------------------------------------------------------- rows
    def train(self, step: int, loss: float, lr: float) -> None:
        """One ``train`` row: the mini-batch loss of update ``step`` (before it) and its LR (compare finds the
        constant-LR phase from these)."""
        self.recorder.log("train", step, loss=float(loss), lr=float(lr))
        self._step = max(self._step, int(step) + 1)    # updates done once this one is

    def raw_model(self, model: nn.Module) -> nn.Module:
        """The raw weights evaluated as every variant is (BN recomputed on bn_batches), for measurements."""
        if self.averages is None or self.bn_mode != "recompute":
            return model
        return self.averages.prepare("raw", self.bn_batches, model=model, call_fn=self.call_fn,
                                     device=_device_of(model))

    def measure(self, step: int, model: nn.Module, **kwargs) -> dict:
        """Every measurement due at ``step`` (their ``every``) on θ_step — call it before update ``step`` — on the
        BN-consistent raw model (docs/run-series.md); ``kwargs`` go to the measurements that take them (``lr`` for
        the probe, ``batch`` for the alignment). Returns {group: values}."""
        due = [m for m in self.measurements if m.due(step)]
        if not due:
            return {}
        target = self.raw_model(model)
        out = {}
        for m in due:
            accepted = inspect.signature(m.measure).parameters
            out[m.group] = m.measure(step, target, **{k: v for k, v in kwargs.items() if k in accepted})
        return out

    def evaluate(self, step: int, model: nn.Module, *, test: Iterable, train: Iterable | None = None,
                 write: bool = True) -> dict:
        """``eval`` row at ``step``: loss and accuracy of raw, raw_running_bn and every average defined now on the
        ``test`` batches (and ``train`` batches if given), BN per ``bn_mode`` (a multi-point average whose
        iterates were not kept for this step, off the WeightAverages' eval_every grid, is left out: NaN); ``dist``
        row ‖θ_avg − θ‖. Then (with ``write``) trajectory.npz, summary.json (status running) and a metrics.csv row.
        Returns the eval row."""
        test, train = list(test), None if train is None else list(train)
        device = _device_of(model)
        names = evaluated_variants(self.bn_mode, self.averages.available() if self.averages is not None else [])
        row = {}
        for name in names:
            if name == RAW_RUNNING_BN or self.averages is None:
                m = model
            else:
                m = self.averages.prepare(name, self.bn_batches, model=model, bn_mode=self.bn_mode,
                                          call_fn=self.call_fn, device=device)
            for split, batches in (("test", test), ("train", train)):
                if batches is not None:
                    loss, acc = evaluate(m, batches, device=device, loss_fn=self.loss_fn)
                    row[f"{split}_loss_{name}"], row[f"{split}_acc_{name}"] = loss, acc
        self.recorder.log("eval", step, **row)
        if self.averages is not None:
            self.recorder.log("dist", step, **self.averages.distances(model))
        self._step = max(self._step, int(step))
        if write:
            self.write("running", step)
            self.recorder.append_metrics()
        return row

    # ---------------------------------------------------------------------------------------------- files
    def write(self, status: str = "running", steps: int | None = None, **summary: Any) -> None:
        """trajectory.npz, then summary.json with ``status`` (running | ok | diverged | interrupted)."""
        steps = self._step if steps is None else int(steps)
        self.recorder.write(status, steps, eval=self.recorder.final_eval(self.variants),
                            wall_s=time.perf_counter() - self._t0, **summary)

    def close(self, status: str = "ok", steps: int | None = None, **summary: Any) -> Path:
        """The final files (status ``ok`` unless told otherwise; ``steps`` defaults to the updates logged by
        :meth:`train` or the last evaluation step); returns the run directory."""
        self.write(status, steps, **summary)
        if hasattr(self.recorder, "close"):      # the optional TensorBoard writer
            self.recorder.close()
        return self.run_dir
