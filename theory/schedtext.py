"""One text syntax for LR schedules, shared by the command lines: ``NAME[:key=value,...]``.

    constant                          cosine:start=5000,final_lr=0,warmup=100
    step:milestones=3000+6000,factor=0.1           piecewise:boundaries=100+200,lrs=0.01+0.001
    linear:start=0                    wsd:warmup=100,decay_start=8000,decay=2000,shape=sqrt
    hyperbolic:start=2000,tau=50

Lists use '+'. ``lr`` defaults to the caller's LR, ``total`` (cosine, linear) to the run length; ``warmup=N`` puts
a linear warmup of N steps in front of any schedule but wsd, which has its own (spec.Warmup, the ramp of
empirical.run's --warmup-steps). :func:`format_schedule` writes a spec schedule back in this syntax.
"""

from __future__ import annotations

import typing
from dataclasses import fields

from . import spec

__all__ = ["parse_schedule", "format_schedule"]

_LISTS = {"milestones": int, "boundaries": int, "lrs": float}


def _kind(cls, key: str):
    """int, float, str or a list element type for parameter ``key`` of schedule class ``cls``."""
    if key in _LISTS:
        return "list", _LISTS[key]
    hint = typing.get_type_hints(cls).get(key)
    return "scalar", {int: int, float: float, str: str}.get(hint, float)


def _number(text: str, cast, what: str, flag: str):
    try:
        return cast(text)
    except ValueError:
        need = "an integer number of steps" if cast is int else "a number"
        raise ValueError(f"{flag}: {what} must be {need}, got {text!r}") from None


def parse_schedule(text: str, lr: float, steps: int, flag: str = "--schedule") -> spec.Schedule:
    """``NAME[:key=value,...]`` -> spec schedule (module docstring). ValueError names the flag, the key and what
    it accepts. Example: ``parse_schedule("cosine:warmup=10", 0.1, 1000)`` → Warmup(Cosine(0.1, total=1000), 10)."""
    name, _, rest = text.partition(":")
    name = name.strip()
    if name not in spec.SCHEDULES:
        raise ValueError(f"{flag} {text!r}: unknown schedule {name!r}; choose one of {', '.join(spec.SCHEDULES)}")
    cls = spec.SCHEDULES[name]
    allowed = [f.name for f in fields(cls)] + ([] if name == "wsd" else ["warmup"])
    params: dict = {}
    for item in filter(None, rest.split(",")):
        key, eq, val = item.partition("=")
        key, val = key.strip(), val.strip()
        if not eq or not key:
            raise ValueError(f"{flag} {text!r}: parameters are key=value pairs separated by ','")
        if key not in allowed:
            raise ValueError(f"{flag} {text!r}: {name} has no parameter {key!r}; it takes {', '.join(allowed)}")
        what = f"{name} {key}"
        if key == "warmup" and name != "wsd":                     # the wrapper; wsd's own warmup is a field
            params[key] = _number(val, int, what, flag)
            continue
        kind, cast = _kind(cls, key)
        if kind == "list":
            params[key] = tuple(_number(v, cast, what, flag) for v in val.split("+") if v != "")
        elif cast is str:
            params[key] = val
        else:
            params[key] = _number(val, cast, what, flag)
    warmup = params.pop("warmup", 0) if name != "wsd" else 0
    params.setdefault("lr", lr)
    if name in ("cosine", "linear"):
        params.setdefault("total", steps)
    if name == "wsd":
        params.setdefault("decay_start", int(0.8 * steps))
        params.setdefault("decay", max(1, steps - params["decay_start"]))
    if name == "hyperbolic":
        params.setdefault("start", steps // 2)
    try:
        sched = cls(**params)
        return spec.Warmup(sched, warmup) if warmup else sched
    except ValueError as e:
        raise ValueError(f"{flag} {text!r}: {e}") from None


def format_schedule(schedule: spec.Schedule) -> str:
    """The ``NAME:key=value,...`` text of a spec schedule (inverse of :func:`parse_schedule` with lr and total
    given explicitly)."""
    warmup = 0
    if isinstance(schedule, spec.Warmup):
        schedule, warmup = schedule.base, schedule.steps
    parts = []
    for f in fields(schedule):
        v = getattr(schedule, f.name)
        parts.append(f"{f.name}={'+'.join(map(str, v)) if isinstance(v, tuple) else v}")
    if warmup:
        parts.append(f"warmup={warmup}")
    return f"{schedule.name}:{','.join(parts)}"

