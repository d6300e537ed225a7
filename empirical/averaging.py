"""All online weight averages of one model, kept at once (theory.md §3.3-3.5; semantics of theory/spec.py EMA, SWA,
TwoPoint, NPoint, mirrored by theory/moments.py so that the overlays compare the same algorithm).

Names: theory.spec.variant_name (the one format, parsed by compare/load.py); the averages themselves are the
theory.spec objects EMA, SWA, TwoPoint, NPoint (``WeightAverages(model, [EMA(0.999, start=200), ...])``).

Time: θ_t is the iterate after t optimiser steps. The constructor sees θ_0; ``update(model, t)`` is called right
after optimiser step t (t = 1, 2, ... with no gaps), when the model holds θ_t. Evaluation at step t happens after
``update(model, t)`` and before ``update(model, t + 1)``.

* ``ema_<γ>`` (``EMA(γ, start=s, every=c)``): y_s = θ_s; then at every t > s with (t − s) % c == 0,
  y ← γ^c·y + (1 − γ^c)·θ_t. γ is per OPTIMISER STEP; γ^c is the decay per EMA update.
  Before its start the EMA equals the iterate, so it is not listed by ``names()`` (the recorder writes NaN).
* ``swa`` (``SWA(start=r, every=c, length=L)``): uniform mean of θ_r, θ_{r+c}, ... (at most L iterates).
* ``two_point_k<k>``: ½(θ_t + θ_{t−k}); defined for t ≥ k. ``points_n<N>_g<G>``: (1/N) Σ_{i<N} θ_{t−iG}; for t ≥ (N−1)G.

:meth:`WeightAverages.due` is the one rule for when an EMA or the SWA takes in the iterate.

Memory of the multi-point averages: they are only needed at evaluation steps e (multiples of ``eval_every`` up to
``total_steps``, ``total_steps`` itself, and steps passed to ``will_need``), so only the snapshots θ_s with
s = e − L (L a lag: 0, k, or i·G) for a future such e are kept. Pass ``total_steps`` (the loop's last step) so the
final evaluation gets its snapshots even when it is not a multiple of eval_every; ``extra_eval_steps`` adds
evaluation steps off that grid (a dense evaluation window). A gap k costs ≈ k/eval_every + 1
copies of the weights (stored in the model's dtype, so they are exact), not k. ``stored_steps()`` lists them.
Asking for a multi-point variant at a step whose snapshots were not kept raises ValueError naming the missing step.

Why not torch.optim.swa_utils.AveragedModel: it deep-copies the whole module once per average (3 EMA decays + SWA
= 4 module copies, incl. buffers and hooks, and deepcopy fails on some wrapped/sharded models, pytorch #82070) and
keeps the model's dtype (a bf16 model gets a bf16 average whose updates (1−γ)Δ round to zero).
Here each average is a flat list of fp32 tensors (fp64 for an fp64 model) keyed by POSITION in
``model.parameters()`` (names change under torch.compile's ``_orig_mod.`` prefix), updated with one
``torch._foreach_lerp_`` per decay, as swa_utils.get_ema_multi_avg_fn / get_swa_multi_avg_fn do (SWA's running mean
is lerp with weight 1/(n+1)). Measured on one CPU thread, ResNet-20 (0.27M parameters, 59 tensors), per step:
3 EMAs 0.45-0.53 ms; 3 EMAs + gaps 100 and 1000 (eval_every 20, 51 snapshots held) 0.54 ms; + SWA 0.62-0.67 ms;
versus 2.2-2.3 ms for three AveragedModel(get_ema_multi_avg_fn) (plus 15 ms of deepcopy) and 1.23 ms for a
per-tensor mul_/add_ loop.
"""
from __future__ import annotations

import copy
import heapq
import math
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

from theory import spec
from theory.spec import EMA, SWA, Averaging, NoAverage, NPoint, TwoPoint, variant_name

FORMAT = 1
# config() keys that must match between a checkpoint (state_dict()["config"]) and the averages it is loaded into:
# the averages themselves (their specs) and what decides the stored state's layout.
SEMANTIC = ("specs", "eval_every", "average_buffers", "n_tensors", "shapes")


def _int(name: str, v, lo: int = 0) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or int(v) != v or v < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    return int(v)


def _acc_dtype(dt: torch.dtype) -> torch.dtype:
    """Accumulator dtype: fp32 for fp16/bf16/fp32 models (bf16 EMA updates round to zero), fp64 kept as fp64."""
    return torch.float64 if dt == torch.float64 else torch.float32


def _checked_specs(averages: Sequence[Averaging]) -> list[Averaging]:
    """The averages as this class keeps them, validated once: EMAs, SWA, TwoPoints, NPoints in that order (the order
    of ``variants``), steps as ints. One EMA timing per WeightAverages (its EMAs are updated together, at the steps
    :meth:`WeightAverages.due` gives for the first), one SWA (named 'swa') and one N-point gap; each decay, gap and N
    at most once (two would be one variant recorded twice under one name)."""
    if isinstance(averages, (EMA, SWA, TwoPoint, NPoint, NoAverage)):
        averages = [averages]
    emas, swas, twos, npts = [], [], [], []
    for a in averages:
        if isinstance(a, EMA):
            emas.append(EMA(spec.check_ema_decay(a.decay), start=int(a.start), every=int(a.every)))
        elif isinstance(a, SWA):
            swas.append(SWA(start=int(a.start), length=None if a.length is None else int(a.length),
                            every=int(a.every)))
        elif isinstance(a, TwoPoint):
            twos.append(TwoPoint(int(a.gap)))
        elif isinstance(a, NPoint):
            npts.append(NPoint(int(a.n), int(a.gap)))
        elif not isinstance(a, NoAverage):   # NoAverage: the raw weights, always there as the variant 'raw'
            raise ValueError(f"not an averaging spec: {a!r}; give theory.spec EMA, SWA, TwoPoint or NPoint objects")
    if len({(e.start, e.every) for e in emas}) > 1:
        raise ValueError(f"all EMAs must share start and every (one EMA timing per WeightAverages), got "
                         f"{[(e.decay, e.start, e.every) for e in emas]}; use a second WeightAverages for a second "
                         f"timing")
    if len(swas) > 1:
        raise ValueError(f"at most one SWA per WeightAverages (its variant is named 'swa'), got {swas}")
    if len({p.gap for p in npts}) > 1:
        raise ValueError(f"all NPoint averages must share one gap, got {[(p.n, p.gap) for p in npts]}")
    spec.check_distinct("EMA decay", [e.decay for e in emas])
    spec.check_distinct("two-point gap", [p.gap for p in twos])
    spec.check_distinct("NPoint N", [p.n for p in npts])
    return [*emas, *swas, *twos, *npts]


def _specs_of_flat_keys(c: dict) -> dict[str, dict]:
    """The ``specs`` record of a checkpoint saved while config() described the averages by flat keys
    (ema_decay_per_step, ema_start, ema_every, swa_start, swa_every, swa_length, two_point_gaps, n_points,
    n_point_gap) instead: rebuilt from them, so that the runs' existing checkpoints still resume and branch."""
    old = [EMA(d, start=c["ema_start"], every=c["ema_every"]) for d in c["ema_decay_per_step"]]
    if c["swa_start"] is not None:
        old.append(SWA(start=c["swa_start"], length=c["swa_length"], every=c["swa_every"]))
    old += [TwoPoint(k) for k in c["two_point_gaps"]] + [NPoint(n, c["n_point_gap"]) for n in c["n_points"]]
    return {variant_name(a): a.to_dict() for a in _checked_specs(old)}


class WeightAverages:
    """EMAs (several decays), SWA, two-point and N-point averages of one model's weights (module docstring).

    ``averages``: the theory.spec averages, the definitions the theory predicts with (theory.md §3.3-3.5)::

          avg = WeightAverages(model, [EMA(0.999, start=200), SWA(start=600), TwoPoint(50), NPoint(4, 100)],
                               eval_every=100)

    (empirical.run builds its list with ``RunConfig.averages()``). All EMAs share one start and period, at most one
    SWA, all NPoints one gap, each decay and gap once.

    ``eval_every`` (steps) says when you will read the multi-point averages (TwoPoint, NPoint): only the iterates
    they need at multiples of it (and ``total_steps``, ``extra_eval_steps``, ``will_need``) are kept. The default 1
    keeps every lag: gap + 1 weight copies for a TwoPoint. EMA and SWA can be read at any step.
    Then ``update(model, step)`` after every optimiser step, and ``module(name, bn_batches)`` for an nn.Module with
    the averaged weights and BatchNorm statistics recomputed on your batches.

    ``plan``: a recording plan (empirical.library.default_plan) that makes the run calibratable by compare.report:
    its two-point lags missing from the averages are added, its dense evaluation steps are kept like
    ``extra_eval_steps``, ``total_steps`` defaults to its own, and with no averages given its EMAs, SWA and lags are
    the averages. Without a plan nothing is added.
    """

    def __init__(self, model: nn.Module, averages: Sequence[Averaging] = (), *, eval_every: int = 1,
                 average_buffers: bool = False, total_steps: int | None = None, extra_eval_steps: Sequence[int] = (),
                 plan=None):
        if plan is not None:
            averages = plan.complete(averages) if averages else plan.averages()
            extra_eval_steps = [*extra_eval_steps, *plan.dense_steps()]
            total_steps = plan.total_steps if total_steps is None else total_steps
        checked = _checked_specs(averages)
        self._emas = [a for a in checked if isinstance(a, EMA)]
        self._swa_spec = next((a for a in checked if isinstance(a, SWA)), None)
        self._specs: dict[str, Averaging] = {variant_name(a): a for a in checked}
        self.eval_every = _int("eval_every (0 = only total_steps / will_need steps)", eval_every)
        self.average_buffers = bool(average_buffers)
        # multi-point variants: name -> lags (steps back from the evaluation step), defined once t >= max(lags)
        self._multi = {variant_name(a): (0, a.gap) if isinstance(a, TwoPoint) else tuple(i * a.gap for i in range(a.n))
                       for a in checked if isinstance(a, (TwoPoint, NPoint))}
        self._ema_names = [variant_name(e) for e in self._emas]
        ref = self._tensors(model)
        if not ref:
            raise ValueError("the model has no parameters to average")
        self._n_params = sum(1 for _ in model.parameters())
        self._shapes = [tuple(t.shape) for t in ref]
        self._acc = [_acc_dtype(t.dtype) for t in ref]
        self._devices = [t.device for t in ref]
        new = lambda: [torch.zeros_like(t, dtype=a) for t, a in zip(ref, self._acc)]  # noqa: E731
        self._ema = [new() for _ in self._emas]
        self._swa, self._swa_n = (new() if self._swa_spec is not None else None), 0
        # fp32 staging copy of a low-precision model's weights (one per update, shared by all averages)
        self._stage = new() if any(t.dtype != a for t, a in zip(ref, self._acc)) else None
        self._nonfloat = [b.detach().clone() for b in self._other_buffers(model)] if self.average_buffers else []
        self._snaps: dict[int, list[torch.Tensor]] = {}
        self._extra: set[int] = set()
        self._uses: dict[int, int] = {}      # _last_use cache
        self._expiry: list[tuple[int, int]] = []   # heap of (last use, step) of the kept snapshots
        self.step = 0
        # where each variant starts: its spec's defined_from (theory.spec, the one definition of "where an average
        # starts"), in the order of specs()
        self._defined_from = {n: a.defined_from for n, a in self._specs.items()}
        # last step of the run: evaluation steps after it never come, so their snapshots are not kept
        self.total_steps = None if total_steps is None else _int("total_steps", total_steps)
        if self.total_steps is not None:
            self._extra.add(self.total_steps)
        # evaluation steps off the eval_every grid (a run's dense evaluation window): same as will_need(e) for each
        self._extra |= {_int("extra evaluation step", e) for e in extra_eval_steps
                        if self.total_steps is None or e <= self.total_steps}
        self._model = model             # the raw model: template and BN source of module()
        self._targets: dict[int, nn.Module] = {}
        self.plan = plan                # the recording plan (empirical.library.RecordingPlan) or None
        self._observe(model, 0)

    # ------------------------------------------------------------------------------------------ tensors
    def _tensors(self, model: nn.Module) -> list[torch.Tensor]:
        """Parameters by position, then (average_buffers) floating buffers by position. The parameters themselves,
        not detached views: every caller runs under torch.no_grad (detaching them every step cost as much as the
        walk over the modules, 25 µs of a digits update)."""
        out = list(model.parameters())
        if self.average_buffers:
            out += [b.detach() for b in model.buffers() if b.is_floating_point()]
        return out

    @staticmethod
    def _other_buffers(model: nn.Module) -> list[torch.Tensor]:
        return [b for b in model.buffers() if not b.is_floating_point()]  # e.g. BN num_batches_tracked

    def _checked(self, model: nn.Module) -> list[torch.Tensor]:
        ts = self._tensors(model)
        if [tuple(t.shape) for t in ts] != self._shapes:
            raise ValueError(f"model does not match the averaged one: {len(ts)} tensors vs {len(self._shapes)} "
                             f"(or different shapes); averages are keyed by position in model.parameters()")
        return ts

    def _high(self, ts: list[torch.Tensor]) -> list[torch.Tensor]:
        """``ts`` in accumulator precision (the staging copy for a low-precision model)."""
        if self._stage is None:
            return ts
        torch._foreach_copy_(self._stage, ts)
        return self._stage

    # ------------------------------------------------------------------------------------------ updates
    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Call after every optimiser step; ``step`` = optimiser steps done (1-based), the model holds θ_step."""
        if isinstance(step, bool) or int(step) != step or step != self.step + 1:
            raise ValueError(f"update must be called after every optimiser step with step = {self.step + 1} "
                             f"(steps done so far + 1), got {step!r}")
        self._observe(model, int(step))

    @staticmethod
    def due(average: EMA | SWA, step: int) -> bool:
        """Does ``average`` take in the iterate θ_step at ``step``: from its start, every ``every`` steps, and for an
        SWA with a ``length`` only its first ``length`` iterates (theory.spec EMA.weights / SWA.weights; theory.md
        §3.3-3.4). The one rule :meth:`update` follows for every EMA and the SWA."""
        if not isinstance(average, (EMA, SWA)):
            raise ValueError(f"due() is for an EMA or SWA, got {average!r} (multi-point averages are read from "
                             f"kept iterates)")
        start, every = int(average.start), int(average.every)
        if step < start or (step - start) % every:
            return False
        return not isinstance(average, SWA) or average.length is None or (step - start) // every < average.length

    @torch.no_grad()   # also when called from __init__: snapshots and averages never join an autograd graph
    def _observe(self, model: nn.Module, t: int) -> None:
        ts = self._checked(model)
        ema_due = bool(self._emas) and self.due(self._emas[0], t)      # the EMAs share start and every
        swa_due = self._swa_spec is not None and self.due(self._swa_spec, t)
        high = self._high(ts) if ema_due or swa_due else None
        if ema_due:
            for e, y in zip(self._emas, self._ema):
                if t == e.start:
                    torch._foreach_copy_(y, high)
                else:  # one multi-tensor kernel per decay: y ← y + (1 − γ^c)(θ − y)
                    torch._foreach_lerp_(y, high, 1.0 - e.decay ** e.every)
        if swa_due:
            if t == self._swa_spec.start:
                torch._foreach_copy_(self._swa, high)
            else:  # running mean: S_{n+1} = S_n + (θ − S_n)/(n + 1)
                torch._foreach_lerp_(self._swa, high, 1.0 / (self._swa_n + 1))
            self._swa_n += 1
        if self._keep(t, t):
            self._snaps[t] = [x.clone() for x in ts]
            heapq.heappush(self._expiry, (self._last_use(t), t))
        # drop the snapshots no evaluation step >= t needs (a heap by last use: a scan of every kept snapshot per
        # step was 70 % of an update of the quadratic preset, which keeps ~100 of them)
        while self._expiry and self._expiry[0][0] < t:
            _, u = heapq.heappop(self._expiry)
            if u in self._snaps:
                if self._keep(u, t):                   # needed again since (will_need): back in the heap
                    heapq.heappush(self._expiry, (self._last_use(u), u))
                else:
                    del self._snaps[u]
        if self.average_buffers:
            for dst, src in zip(self._nonfloat, self._other_buffers(model)):
                dst.copy_(src)
        self.step = t

    def _is_eval(self, e: int) -> bool:
        periodic = self.eval_every > 0 and e % self.eval_every == 0 and (
            self.total_steps is None or e <= self.total_steps)
        return periodic or e in self._extra

    def _keep(self, s: int, now: int) -> bool:
        """Is θ_s a point of some multi-point variant at an evaluation step e >= now?"""
        return self._last_use(s) >= now

    def _last_use(self, s: int) -> int:
        """The last evaluation step at which θ_s is a point of a multi-point variant (-1: none). Cached per s (the
        per-step bookkeeping asked it for every kept snapshot: 0.15 ms a step on digits, 40 % of the update);
        will_need and load_state_dict add evaluation steps and clear the cache."""
        e = self._uses.get(s)
        if e is None:
            e = self._uses[s] = max((e for lags in self._multi.values() for e in (s + lag for lag in lags)
                                     if e >= max(lags) and self._is_eval(e)), default=-1)
        return e

    def will_need(self, step: int) -> None:
        """Also keep what the multi-point variants need at ``step`` (e.g. the final step when it is not a multiple
        of eval_every). Raises ValueError when a needed iterate is already gone."""
        step = _int("step", step)
        if step < self.step:
            raise ValueError(f"will_need({step}): step {step} is already past (now at step {self.step})")
        missing = self._missing(step)
        if missing:
            raise ValueError(f"will_need({step}): too late for {missing}; call it before step {min(missing.values())}"
                             f" (e.g. pass total_steps to the constructor)")
        self._extra.add(step)
        self._uses.clear()

    def _missing(self, e: int) -> dict[str, int]:
        """{variant: earliest missing snapshot step} for multi-point variants defined at e, if it were now or later."""
        out = {}
        for name, lags in self._multi.items():
            gone = [e - lag for lag in lags if e >= max(lags) and e - lag <= self.step and e - lag not in self._snaps]
            if gone:
                out[name] = min(gone)
        return out

    def stored_steps(self) -> list[int]:
        """Steps s whose iterate θ_s is held for the multi-point averages (memory: one weight copy each)."""
        return sorted(self._snaps)

    # ------------------------------------------------------------------------------------------ read-out
    def all_names(self) -> list[str]:
        """Every variant's name (format: theory.spec.variant_name), whether defined yet or not."""
        return list(self._specs)

    def specs(self) -> dict[str, Averaging]:
        """{variant name: the theory.spec average it computes, with its timing} — what theory.predict and
        theory.equivalence take (theory.md §3.3-3.5)."""
        return dict(self._specs)

    def names(self) -> list[str]:
        """Variants defined at the current step: those whose theory.spec ``defined_from`` has passed (before that each
        equals the raw iterate)."""
        t = self.step
        return [n for n, start in self._defined_from.items() if t >= start]

    def available(self) -> list[str]:
        """Variants that can be read now: ``names()`` less the multi-point ones whose iterates were not kept (a step
        off the evaluation grid: eval_every, total_steps, extra_eval_steps, will_need)."""
        missing = self._missing(self.step)
        return [n for n in self.names() if n not in missing]

    def parameters_of(self, name: str) -> list[torch.Tensor]:
        """The variant's parameter tensors now (no buffers), in accumulator precision; do not modify them."""
        return self._value(name)[:self._n_params]

    def _value(self, name: str) -> list[torch.Tensor]:
        """The variant's tensors now, in accumulator precision (the stored list itself for EMA / SWA)."""
        if name not in self.all_names():
            raise ValueError(f"unknown variant {name!r}; this WeightAverages has {self.all_names()}")
        if name not in self.names():
            raise ValueError(f"variant {name!r} is not defined yet at step {self.step} (it equals the raw iterate "
                             f"until it starts); use names() for the defined ones")
        if name in self._ema_names:
            return self._ema[self._ema_names.index(name)]
        if name == "swa":
            return self._swa
        lags, t = self._multi[name], self.step
        gone = [t - lag for lag in lags if t - lag not in self._snaps]
        if gone:
            raise ValueError(
                f"{name} at step {t} needs the iterate of step {min(gone)}, which was not kept: snapshots are kept "
                f"only for evaluation steps (multiples of eval_every={self.eval_every}, total_steps and will_need "
                f"steps {sorted(self._extra)}); call will_need({t}) before step {min(gone)}")
        out = [x.to(dtype=a, copy=True) for x, a in zip(self._snaps[t - lags[0]], self._acc)]
        for lag in lags[1:]:
            torch._foreach_add_(out, self._high_list(self._snaps[t - lag]))
        if len(lags) > 1:
            torch._foreach_mul_(out, 1.0 / len(lags))
        return out

    @staticmethod
    def _high_list(ts: list[torch.Tensor]) -> list[torch.Tensor]:
        return [x if x.dtype == _acc_dtype(x.dtype) else x.to(_acc_dtype(x.dtype)) for x in ts]

    @torch.no_grad()
    def copy_into(self, name: str, target: nn.Module) -> None:
        """Load variant ``name`` into ``target`` (same architecture): parameters, and with average_buffers the
        averaged floating buffers plus the latest non-float buffers (BN num_batches_tracked). Other buffers of
        ``target`` are left as they are (empirical.bn.prepare_variant sets them)."""
        vals = self._value(name)
        torch._foreach_copy_(self._checked(target), vals)
        if self.average_buffers:
            for dst, src in zip(self._other_buffers(target), self._nonfloat):
                dst.copy_(src)

    def module(self, name: str, bn_batches: Iterable | None = None, *, model: nn.Module | None = None,
               bn_mode: str | None = None, call_fn: Callable[[nn.Module, Any], Any] | None = None,
               device=None) -> nn.Module:
        """A new nn.Module holding variant ``name`` now (``'raw'`` = the live weights), ready to evaluate.

        BatchNorm (theory.md §4.3, empirical/bn.py): with ``bn_batches`` (an iterable of batches, e.g. a list of a
        few (x, y) training batches, un-augmented) the running statistics are recomputed on them with the variant's
        weights — the raw weights included, so every variant is evaluated by one procedure (``bn_mode
        'recompute'``). Without batches the averaged buffers are used (``average_buffers=True``), else the raw
        model's running statistics (``'raw'``). ``model`` is the raw model (default: the one given to the
        constructor); ``call_fn(model, batch)`` forwards one batch (default ``model(batch[0])``).

        Every call returns an independent module: ``ema = avg.module("ema_0.99"); swa = avg.module("swa")`` are two
        objects, neither changed by later updates or calls. Cost: the variant is prepared on this WeightAverages'
        scratch copy of the model (:meth:`prepare`), then that copy is deep-copied (one ``copy.deepcopy`` of the
        model per call; the raw model itself is never returned). Its train/eval flags are those of ``model``: call
        ``.eval()`` before evaluating. An evaluation loop that asks for many variants in turn uses :meth:`prepare`.
        """
        return copy.deepcopy(self.prepare(name, bn_batches, model=model, bn_mode=bn_mode, call_fn=call_fn,
                                          device=device))

    def prepare(self, name: str, bn_batches: Iterable | None = None, *, model: nn.Module | None = None,
                bn_mode: str | None = None, call_fn: Callable[[nn.Module, Any], Any] | None = None,
                device=None) -> nn.Module:
        """Variant ``name`` prepared as :meth:`module` does, on ONE scratch copy of the model per WeightAverages
        (``copy.deepcopy`` on first use), reused and overwritten by the next call: evaluate it before asking for
        another variant, and never keep it. In modes 'raw' and 'averaged' the variant 'raw' is ``model`` itself.
        No copy per call: what RunWriter.evaluate and the Lightning callback use at every evaluation."""
        from empirical.bn import prepare_variant   # bn imports nothing from here; kept local to keep the import light

        raw = self._model if model is None else model
        if bn_mode is None:
            bn_mode = "recompute" if bn_batches is not None else ("averaged" if self.average_buffers else "raw")
        if bn_mode == "recompute" and bn_batches is None:
            raise ValueError("bn_mode 'recompute' needs bn_batches: a few un-augmented training batches")
        key = id(raw)
        if key not in self._targets:
            self._targets[key] = copy.deepcopy(raw)
        return prepare_variant(self, name, self._targets[key], raw, bn_mode,
                               list(bn_batches) if bn_batches is not None else None, call_fn, device=device)

    @torch.no_grad()
    def distances(self, model: nn.Module) -> dict[str, float]:
        """{variant: ‖θ_variant − θ‖₂ over all parameters (not buffers)} for the defined variants; θ from ``model``."""
        cur = self._high_list(self._checked(model)[:self._n_params])
        out = {}
        for name in self.names():
            diff = torch._foreach_sub(self._value(name)[:self._n_params], cur)
            norms = torch.stack([n.double() for n in torch._foreach_norm(diff)])
            out[name] = float(torch.linalg.vector_norm(norms))
        return out

    # ------------------------------------------------------------------------------------------ semantics / state
    def config(self) -> dict:
        """Resolved semantics for config.json (units: optimiser steps). ``specs`` is the record of the averages:
        {variant: its theory.spec average's ``to_dict()``} (theory.md §3.3-3.5; read back by
        theory.spec.averaging_from_dict); the rest describes how they are stored."""
        acc = sorted({str(a).replace("torch.", "") for a in self._acc})
        return {
            "variants": self.all_names(),
            "specs": {n: a.to_dict() for n, a in self._specs.items()},
            "ema_time_constant_steps": {n: math.inf if e.decay == 0 else 1.0 / (1.0 - e.decay)
                                        for n, e in zip(self._ema_names, self._emas)},
            "ema_init": "iterate at the EMA's start (no zero init, no debiasing)",
            "eval_every": self.eval_every,
            "snapshots": "theta_s kept only for s = e - lag, e an evaluation step (multiple of eval_every, "
                         "total_steps, will_need), stored in the model dtype",
            "average_buffers": self.average_buffers, "accumulator_dtype": acc,
            "update_op": "torch._foreach_lerp_, one call per EMA decay and one for SWA",
            "keyed_by": "position in model.parameters() (then floating buffers)",
            "n_tensors": len(self._shapes), "shapes": [list(s) for s in self._shapes],
            "recording_plan": self.plan.config() if self.plan is not None else None,
        }

    def state_dict(self) -> dict:
        """Tensors and plain Python only (``torch.load(weights_only=True)``). Like nn.Module.state_dict the tensors
        are the live ones: save (or clone) before the next update."""
        c = self.config()
        return {"format": FORMAT, "config": {k: c[k] for k in SEMANTIC}, "step": self.step,
                "ema": self._ema, "swa": self._swa, "swa_n": self._swa_n,
                "snapshots": {int(s): v for s, v in self._snaps.items()}, "extra_steps": sorted(self._extra),
                "nonfloat_buffers": self._nonfloat}

    @torch.no_grad()
    def load_state_dict(self, sd: dict) -> None:
        """Restore exactly (bit for bit). The configuration must match; total_steps / will_need steps of both
        are kept, and ValueError is raised at once if one of them can no longer be served."""
        if not isinstance(sd, dict) or sd.get("format") != FORMAT:
            raise ValueError(f"not a WeightAverages state (format {FORMAT}); got keys {list(sd)[:8]}")
        mine, saved = self.config(), dict(sd["config"])
        if "specs" not in saved:      # saved while the averages were recorded as flat keys (ema_start, ...)
            saved["specs"] = _specs_of_flat_keys(saved)
        diff = [k for k in SEMANTIC if saved.get(k) != mine[k]]
        if diff:
            raise ValueError(f"checkpoint averages differ from this configuration in {diff}: "
                             + "; ".join(f"{k}: saved {saved.get(k)!r} vs now {mine[k]!r}" for k in diff))
        for dst, src in zip(self._ema, sd["ema"]):
            torch._foreach_copy_(dst, list(src))
        if self._swa is not None:
            torch._foreach_copy_(self._swa, list(sd["swa"]))
        for dst, src in zip(self._nonfloat, sd["nonfloat_buffers"]):
            dst.copy_(src)
        self._snaps = {int(s): [x.to(device=dev, copy=True) for x, dev in zip(v, self._devices)]
                       for s, v in sd["snapshots"].items()}
        self.step, self._swa_n = int(sd["step"]), int(sd["swa_n"])
        self._extra |= {int(e) for e in sd["extra_steps"]}
        self._uses.clear()
        self._expiry = [(self._last_use(u), u) for u in self._snaps]
        heapq.heapify(self._expiry)
        horizon = self.step + max((max(lags) for lags in self._multi.values()), default=0)
        for e in (e for e in range(self.step, horizon + 1) if self._is_eval(e)):
            missing = self._missing(e)
            if missing:
                raise ValueError(f"resumed at step {self.step}: cannot produce {sorted(missing)} at step {e} "
                                 f"(iterates {sorted(missing.values())} were not kept); keep the original "
                                 f"total_steps / --max-steps")
