"""The branch-schedule syntax: the LR of a branch run from its branch step on (``python -m empirical.run
--branch-from CHECKPOINT --branch-schedule TEXT``, ``python -m empirical.posthoc --schedule TEXT --from STEP``)::

    half | scale:F | constant:LR | ema:GAMMA[:H] | swa[:H] | hyperbolic:TAU

:meth:`BranchSchedule.parse` is the one parser of that text: it splits it, converts the values and checks each,
with one message per malformed form (what is wrong, then the accepted forms); ``str()`` gives back the canonical
text, which parses to an equal BranchSchedule. What the forms mean (the LR they give) is
:meth:`BranchSchedule.lr_schedule`'s. ``ema:GAMMA`` and ``swa`` without the curvature H parse (``needs_h``): --from-report
fills H in (:meth:`BranchSchedule.with_h`); a run needs it. GAMMA is an EMA decay per optimiser step, checked by
theory.spec.check_ema_decay (0 ≤ γ < 1); F, LR, H (1/LR units) and TAU (steps) are finite and > 0.

No torch: the command line is checked in well under a second.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from theory import spec
from theory.stationary import harmonic_equivalent_lr

FORMS = "half, scale:F, constant:LR, ema:GAMMA[:H], swa[:H], hyperbolic:TAU"
# kind -> the names of its values, in order; ema's and swa's H may be left out (needs_h)
VALUES = {"half": (), "scale": ("F",), "constant": ("LR",), "ema": ("GAMMA", "H"), "swa": ("H",),
          "hyperbolic": ("TAU",)}
_WRITTEN = {"half": "half (no value)", "scale": "scale:F", "constant": "constant:LR", "ema": "ema:GAMMA or ema:GAMMA:H",
            "swa": "swa or swa:H", "hyperbolic": "hyperbolic:TAU"}
_H_OPTIONAL = ("ema", "swa")


class BranchScheduleError(ValueError):
    """A malformed branch schedule: one line, what is wrong and the accepted forms."""


def _fail(text: str, what: str):
    raise BranchScheduleError(f"--branch-schedule {text!r}: {what}; accepted forms: {FORMS}")


def _num(x: float) -> str:
    """Shortest text that reads back as ``x`` exactly, without a trailing ``.0``: 0.99, 2, 1e-05."""
    r = repr(float(x))
    return r[:-2] if r.endswith(".0") else r


@dataclass(frozen=True)
class BranchSchedule:
    """One parsed branch schedule (build it with :meth:`parse`)."""
    kind: str                       # half, scale, constant, ema, swa or hyperbolic
    value: float | None = None      # F (scale), LR (constant), GAMMA (ema), TAU (hyperbolic); None for half, swa
    h: float | None = None          # ema, swa: the curvature H (1/LR units); None: not given (needs_h)

    @classmethod
    def parse(cls, text: str) -> BranchSchedule:
        """``text`` -> BranchSchedule; BranchScheduleError (a ValueError), one line, on anything else."""
        text = str(text)
        kind, *args = text.split(":")
        if kind not in VALUES:
            _fail(text, "no schedule given" if not text else f"unknown kind {kind!r}")
        names = VALUES[kind]
        least = len(names) - (kind in _H_OPTIONAL)
        if not least <= len(args) <= len(names):
            _fail(text, f"{kind} is written {_WRITTEN[kind]}")
        vals = []
        for name, arg in zip(names, args):
            try:
                v = float(arg)
            except ValueError:
                _fail(text, f"{name} must be a number, got {arg!r}")
            if name == "GAMMA":
                try:
                    spec.check_ema_decay(v)
                except ValueError as e:
                    _fail(text, f"GAMMA: {e}")
            elif not (math.isfinite(v) and v > 0):
                _fail(text, f"{name} must be finite and > 0, got {arg}")
            vals.append(v)
        given = dict(zip(names, vals))
        h = given.pop("H", None)
        return cls(kind, next(iter(given.values()), None), h)

    @property
    def needs_h(self) -> bool:
        """ema:GAMMA or swa without H (--from-report fills it in; a run cannot use it as it is)."""
        return self.kind in _H_OPTIONAL and self.h is None

    def with_h(self, h: float) -> BranchSchedule:
        """ema:GAMMA / swa completed with the curvature ``h`` (checked like a parsed H)."""
        if self.kind not in _H_OPTIONAL:
            raise BranchScheduleError(f"--branch-schedule {str(self)!r}: only ema and swa take a curvature H")
        return BranchSchedule.parse(str(BranchSchedule(self.kind, self.value)) + ":" + _num(h))

    def lr_schedule(self, lr0: float, momentum: float, start: int) -> spec.Schedule:
        """The LR from the branch step ``start`` on, given the parent's LR ``lr0`` there (theory.md §3.3-3.5):

        * ``half`` / ``scale:F``: constant lr0/2 (two-point ⇔ λ/2, §3.5) / F·lr0; ``constant:LR``: LR.
        * ``ema:GAMMA:H``: constant λ_eq = lr0·β / (β + λ_eff·H), β = 1 − γ, λ_eff = lr0/(1 − μ): the harmonic rule
          1/α_eq = 1/α + 1/β of §3.3 with α = λ_eff·H (momentum via λ_eff, §2.6). γ = 0 (β = 1) is allowed: the
          EMA is the iterate and λ_eq = lr0/(1 + λ_eff·H).
        * ``swa:H``: hyperbolic with τ = (1 − μ)/(lr0·H) = 1/α (§3.4); ``hyperbolic:TAU``: τ = TAU steps.
        BranchScheduleError where H is needed and missing."""
        if self.needs_h:
            raise BranchScheduleError(f"--branch-schedule {str(self)!r} needs the curvature H to give an LR")
        lam_eff = lr0 / (1.0 - momentum)
        if self.kind == "half":
            return spec.Constant(lr0 / 2)
        if self.kind == "scale":
            return spec.Constant(lr0 * self.value)
        if self.kind == "constant":
            return spec.Constant(self.value)
        if self.kind == "ema":
            return spec.Constant(float(harmonic_equivalent_lr(lr0, self.value, self.h, momentum)))
        tau = self.value if self.kind == "hyperbolic" else 1.0 / (lam_eff * self.h)
        return spec.Hyperbolic(lr0, start=start, tau=tau)

    def __str__(self) -> str:
        return ":".join([self.kind, *(_num(v) for v in (self.value, self.h) if v is not None)])
