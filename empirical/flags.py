"""The command line of ``python -m empirical.run``, generated from :class:`empirical.config.RunConfig`'s fields.

``--batch-size 128`` sets ``batch_size``; tuples are comma-separated (``--ema-decays 0.99,0.999``), optional
integers accept ``none``, booleans have ``--no-`` forms; every help text ends with "(default: X)", the preset's
value when a PRESET is named. :func:`parse` reads a command line, :func:`expand` turns
``--epochs`` and ``--from-report`` into fields, :func:`resolve_preset` applies ``--steps`` scaling and validates.
Imports no torch: a bad command line fails in well under a second.
"""
from __future__ import annotations

import argparse
import typing
from dataclasses import dataclass, fields, replace

from common.cli import command_note, default_text, with_default
from theory.branchspec import BranchSchedule
from empirical.config import DECAY_SCHEDULES, ConfigError, RunConfig, field_type, flag_of
from empirical.presets import PRESETS
from empirical.scaling import STEP_SCALED, epochs_to_steps, scale_to_steps
from empirical.schedules import MAX_STEPS, branch_schedule_from_report, missing_h_message
from empirical.validation import Problem, problem_text, problems


def _converter(name: str, tp):
    elem, is_tuple, optional = field_type(tp)

    def one(text: str):
        try:
            return elem(text)
        except ValueError:
            kind = "an integer" if elem is int else "a number" if elem is float else "a string"
            raise argparse.ArgumentTypeError(f"{text!r} is not {kind}") from None

    def convert(text: str):
        if optional and text.lower() in ("none", ""):
            return None
        if is_tuple:
            return tuple(one(x) for x in text.split(",") if x.strip() != "")
        return one(text)

    return convert


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of argparse's usage block (the bad-input contract)
        raise ConfigError(f"{message} (see --help)")


def _show(v) -> str:
    if isinstance(v, tuple):
        return ",".join(map(str, v)) or "(none)"
    return "none" if v is None else str(v)


def _shown_default(name: str, preset: str | None) -> object:
    """The default --help shows for field ``name`` (common.cli convention): PRESET's value when the command line
    names one, else the digits and imagenet values ("digits X; imagenet Y", or X when they agree)."""
    if preset is not None:
        return getattr(PRESETS[preset], name)
    a, b = getattr(PRESETS["digits"], name), getattr(PRESETS["imagenet"], name)
    if a == b:
        return a
    text = lambda v: default_text(v) or ("off" if v is False else "none")   # noqa: E731
    return f"digits {text(a)}; imagenet {text(b)}"


def _switches() -> set[str]:
    hints = typing.get_type_hints(RunConfig)
    names = [flag_of(f.name) for f in fields(RunConfig) if hints[f.name] is bool]
    return {"-h", "--help", *names, *("--no-" + n[2:] for n in names)}


def preset_named(argv: list[str]) -> str | None:
    """The PRESET of a command line without parsing it (for --help, which argparse acts on before the positional
    is known): the first argument that is neither a flag nor a flag's value."""
    switches, i = _switches(), 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            return argv[i + 1] if i + 1 < len(argv) and argv[i + 1] in PRESETS else None
        if a.startswith("-"):
            i += 1 if ("=" in a or a in switches) else 2
            continue
        return a if a in PRESETS else None
    return None


def build_parser(preset: str | None = None) -> argparse.ArgumentParser:
    """The parser of ``python -m empirical.run``; ``preset`` only chooses which defaults --help shows."""
    shown = f"the {preset} preset's" if preset else "two presets' (digits; imagenet)"
    p = _Parser(prog="python -m empirical.run", allow_abbrev=False, epilog=command_note("empirical.run"),
                description=f"Train a ResNet and record trajectories comparable to theory.predict. Every flag "
                            f"overrides the preset's value; '(default: X)' shows {shown} values (PRESET --help shows "
                            f"that preset's). --steps N (or --epochs E) scales every step-based value of the preset "
                            f"that is not given explicitly by N / the preset's steps: "
                            f"{', '.join(flag_of(n) for n in STEP_SCALED)}.")
    p.add_argument("preset", nargs="?", default=None,
                   help=f"one of {', '.join(PRESETS)} (optional with --resume: the run's saved config is used)")
    hints = typing.get_type_hints(RunConfig)
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in fields(RunConfig):
        if f.name == "preset":
            continue
        g = f.metadata["group"]
        grp = groups.get(g) or groups.setdefault(g, p.add_argument_group(g))
        tp = hints[f.name]
        help_text = with_default(f.metadata["help"], _shown_default(f.name, preset)).replace("%", "%%")
        if tp is bool:
            grp.add_argument(flag_of(f.name), dest=f.name, action=argparse.BooleanOptionalAction,
                             default=argparse.SUPPRESS, help=help_text)
        else:
            elem, is_tuple, _ = field_type(tp)
            meta = f"{elem.__name__.upper()}[,...]" if is_tuple else elem.__name__.upper()
            grp.add_argument(flag_of(f.name), dest=f.name, type=_converter(f.name, tp), default=argparse.SUPPRESS,
                             metavar=meta,
                             help=help_text)
        if f.name == "steps":   # command-line only: becomes --steps (config.json records the steps)
            grp.add_argument("--epochs", dest="epochs", type=_converter("epochs", float), default=argparse.SUPPRESS,
                             metavar="E", help="run length in epochs instead of --steps: steps = E × steps per "
                                               "epoch (training examples // --batch-size), printed at the start; "
                                               "scales the preset like --steps")
        if f.name == "branch_schedule":
            grp.add_argument("--from-report", dest="from_report", default=argparse.SUPPRESS, metavar="DIR",
                             help="a python -m compare.report output folder: --branch-schedule ema:GAMMA or swa takes "
                                  "H from the calibration in its metrics.json (the recorded schedule has H filled in)")
    return p




@dataclass(frozen=True)
class Cli:
    """A parsed command line: PRESET, the RunConfig fields given explicitly, and the command-line-only flags."""
    preset: str | None
    given: dict
    epochs: float | None = None
    from_report: str | None = None


def parse(argv: list[str] | None = None) -> Cli:
    """Parse (no validation beyond syntax). Raises ConfigError on bad syntax, an unknown preset, or --epochs with
    --steps."""
    import sys
    argv = list(sys.argv[1:] if argv is None else argv)
    args = vars(build_parser(preset_named(argv)).parse_args(argv))
    preset = args.pop("preset")
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    epochs, report = args.pop("epochs", None), args.pop("from_report", None)
    if epochs is not None and "steps" in args:
        raise ConfigError(f"--epochs {epochs:g} and --steps {args['steps']} both set the run length: give one")
    return Cli(preset, args, epochs, report)    # args: only the flags actually given (defaults are SUPPRESSed)


def _needs_h(text: str) -> bool:
    """Is ``text`` ema:GAMMA or swa without the curvature H? A malformed text is not: problems() reports it, with
    the other flags' problems."""
    try:
        return BranchSchedule.parse(text).needs_h
    except ValueError:
        return False


def expand(cli: Cli, ema_every: int | None = None) -> tuple[dict, list[str]]:
    """(the explicit RunConfig overrides, notes to print): --epochs becomes --steps (from PRESET's dataset and
    batch size, or the ones given), --from-report fills in the H of --branch-schedule ema:GAMMA / swa (using
    ``ema_every``, else the one given or PRESET's). Raises ConfigError."""
    given, notes = dict(cli.given), []
    if cli.epochs is not None:
        if cli.preset is None:
            raise ConfigError("--epochs needs PRESET (its dataset and batch size give the steps per epoch); a resumed "
                              "run or a branch keeps its parent's --steps")
        base = replace(PRESETS[cli.preset], **{k: v for k, v in given.items()
                                               if k in ("dataset", "data_dir", "max_train", "batch_size")})
        given["steps"], note = epochs_to_steps(base, cli.epochs)
        notes.append(note)
    text = given.get("branch_schedule")
    if cli.from_report is not None:
        if text is None:
            raise ConfigError("--from-report DIR fills in the H of --branch-schedule ema:GAMMA or swa; give it with "
                              "--branch-from CHECKPOINT --branch-schedule ema:GAMMA")
        every = ema_every or given.get("ema_every") or (PRESETS[cli.preset].ema_every if cli.preset else 1)
        given["branch_schedule"], note = branch_schedule_from_report(text, cli.from_report, every)
        notes.append(note)
    elif text is not None and _needs_h(text):
        raise ConfigError(missing_h_message(text))
    return given, notes


def _assemble(preset: str, given: dict) -> tuple[RunConfig, list[str], list[Problem]]:
    """PRESET scaled to the given --steps, the given flags on top: (config, notes, problems)."""
    base, notes = PRESETS[preset], []
    steps = given.get("steps", base.steps)
    cfg = base
    if isinstance(steps, int) and 1 <= steps <= MAX_STEPS and steps != base.steps:
        cfg, changed = scale_to_steps(base, steps, given)
        if changed:
            notes.append(f"--steps {steps:,} = {steps / base.steps:.4g} × the {preset} preset's {base.steps:,}: "
                         f"its step-based values are scaled to match (flags given are kept as given): "
                         + ", ".join(f"{flag_of(k)} {_show(v)}" for k, v in changed.items()))
    cfg = replace(cfg, **given)
    if "decay_start" in given and cfg.schedule not in DECAY_SCHEDULES:
        notes.append(f"--decay-start {given['decay_start']} has no effect with --schedule {cfg.schedule} (it has no "
                     f"decay phase); recorded as given")
    return cfg, notes, problems(cfg)


def _cli_value(v) -> str:
    import shlex
    if isinstance(v, tuple):
        return shlex.quote(",".join(map(str, v)))
    return "none" if v is None else shlex.quote(str(v))


def command_line(cli: Cli, given: dict) -> str:
    """``python -m empirical.run PRESET --flag value ...`` for these explicit flags (--epochs shown as given)."""
    words = ["python -m empirical.run", cli.preset or ""]
    for k, v in given.items():
        if k == "steps" and cli.epochs is not None:
            words.append(f"--epochs {cli.epochs:g}")
        elif isinstance(v, bool):
            words.append(flag_of(k) if v else "--no-" + flag_of(k)[2:])
        else:
            words.append(f"{flag_of(k)} {_cli_value(v)}")
    if cli.from_report is not None:
        words.append(f"--from-report {_cli_value(cli.from_report)}")
    return " ".join(w for w in words if w)


def _working_command(cli: Cli, given: dict, found: list[Problem]) -> str | None:
    """A command that works: the given flags minus the ones in the problems (so the preset's values, scaled to the
    run length, apply); the run length is dropped too only if that is not enough. None if neither works."""
    involved = {name for p in found for name in p.fields}
    keep = {k: v for k, v in given.items() if k not in involved or k == "steps"}
    for attempt in (keep, {k: v for k, v in keep.items() if k != "steps"}):
        if not _assemble(cli.preset, attempt)[2]:
            return command_line(cli if "steps" in attempt else replace(cli, epochs=None), attempt)
    return None


def resolve_preset(cli: Cli, given: dict) -> tuple[RunConfig, list[str]]:
    """PRESET + explicit flags -> (validated config, notes). --steps scales the preset's step-based values that were
    not given; a ConfigError lists every problem in one line and, when flags conflict, a command that works."""
    cfg, notes, found = _assemble(cli.preset, given)
    if found:
        text = problem_text(found)
        fix = _working_command(cli, given, found) if any(len(p.fields) > 1 for p in found) else None
        raise ConfigError(text + (f" — this works: {fix}" if fix else ""))
    return cfg, notes


def from_cli(argv: list[str] | None = None) -> RunConfig:
    """Preset + ``--flag value`` overrides -> validated RunConfig (--steps scales the preset, see resolve_preset).
    Raises ConfigError (one line) on bad input.

    (``--resume`` without PRESET is resolved by ``empirical.run`` from the run's saved config.)"""
    cli = parse(argv)
    if cli.preset is None:
        raise ConfigError(f"missing PRESET: choose one of {', '.join(PRESETS)} "
                          f"(e.g. python -m empirical.run digits)")
    return resolve_preset(cli, expand(cli)[0])[0]
