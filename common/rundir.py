"""Run directories: the one on-disk format shared by theory, empirical and compare runs.

A run directory holds::

    config.json      {"schema_version", "source": "theory"|"empirical", "command": [argv...], "config": {...}}
    env.json         {"schema_version", "python", "platform", "packages": {name: version}, "git": {...}, ...}
    trajectory.npz   series "GROUP/NAME" -> array; every group has an int64 "GROUP/step" (optimiser steps)
    summary.json     {"schema_version", "status": "ok"|"diverged"|"interrupted", "steps", ...}

The group "static" holds arrays without a time axis (e.g. the step at which each bank batch was used).
Series are grouped because different measurements have different cadences (evaluation every few hundred
steps, fixed-batch bank every few steps, probes rarely). Within a group, every array's first axis has the
length of that group's ``step`` array; further axes are allowed (e.g. ``bank/train_loss`` is [T, K]).

Everything here is numpy + json: a run can be read without torch. Every write is atomic (temp file in the
same directory, then ``os.replace``), so a crash leaves either the previous file or the new one, never half.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import math
import os
import platform
import re
import secrets
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

SCHEMA_VERSION = 1
RUN_FILES = ("config.json", "env.json", "trajectory.npz", "summary.json")
STATUSES = ("ok", "diverged", "interrupted", "running")
RUNS_ROOT = Path("runs")
STATIC_GROUP = "static"  # series without a time axis (e.g. "static/bank_used_at"); exempt from the step rule


class RunDirError(ValueError):
    """A run directory is missing, incomplete, of another schema, or unreadable. The message says which."""


# --------------------------------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------------------------------

def current_umask() -> int:
    """The process umask. Linux reports it in /proc/self/status ("Umask:", since 4.7), which reads it without
    changing it; elsewhere os.umask has to set a value to return the old one, so it is set back at once (another
    thread creating a file in between would see 0o077, the stricter of the two, never a looser mask)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o077)
    os.umask(old)
    return old


@contextmanager
def naming(path: str | os.PathLike):
    """An OSError raised in the block without a file name (a write or fsync on an open file: ENOSPC, EIO, EDQUOT)
    gets ``path`` as its ``filename``, so the one-line error of a command line says which file could not be written
    ("cannot write RUN/summary.json: No space left on device"). One with a file name keeps its own."""
    try:
        yield
    except OSError as e:
        if e.filename is None:
            e.filename = os.fspath(path)
        raise


def os_error_text(e: OSError) -> str:
    """One line for an OSError: "cannot read or write PATH: REASON" (both paths of a failed rename)."""
    where = " -> ".join(os.fspath(f) for f in (e.filename, e.filename2) if f is not None) or "a file"
    return f"cannot read or write {where}: {e.strerror or e}"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temp file in the same directory and ``os.replace`` (atomic on POSIX).
    An OSError names ``path`` (:func:`naming`), or the temp file or directory where the OS named that."""
    path = Path(path)
    with naming(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            # mkstemp creates 0600 (private temp files); a run file is shared like any file a tool writes:
            # 0666 & ~umask
            os.fchmod(fd, 0o666 & ~current_umask())
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
    return path


class EncodedJSON(str):
    """A JSON value already encoded by :func:`to_json_text`; embedded verbatim when it appears inside another
    object, so a large value (10,000-entry per-direction lists: ~7 ms of float formatting per list here) that goes
    both to stdout and into summary.json is formatted once."""


def encoded(obj: Any) -> EncodedJSON:
    """``obj`` as compact JSON text to embed in later :func:`to_json_text` calls."""
    return EncodedJSON(to_json_text(obj, compact=True).strip())


def _plain(obj: Any, count: list[int], raw: list[str] | None = None, tag: str = "") -> Any:
    """numpy -> python, NaN/inf -> None (JSON has neither: divergence is data, not a crash); counts the leaves.

    An :class:`EncodedJSON` leaf becomes a placeholder string; ``raw`` collects its text for the splice."""
    if isinstance(obj, EncodedJSON):
        count[0] += 1
        if raw is None:
            raise TypeError("EncodedJSON is only accepted by to_json_text")
        raw.append(str(obj))
        return f"{tag}:{len(raw) - 1}"
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind in "iuf" and obj.ndim == 1:  # fast path: long per-direction vectors
            count[0] += obj.size
            if obj.dtype.kind == "f" and not np.all(np.isfinite(obj)):
                return [v if math.isfinite(v) else None for v in obj.tolist()]
            return obj.tolist()
        obj = obj.tolist()
    if isinstance(obj, dict):
        return {str(k): _plain(v, count, raw, tag) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v, count, raw, tag) for v in obj]
    count[0] += 1
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, (int, str)):
        return obj
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


# Above this many values (e.g. per-direction lists of a 10,000-eigenvalue spectrum) files are written compact:
# json's indenting encoder is pure Python and took ~0.1 s per 10,000 floats here; the compact one is in C.
_INDENT_MAX_LEAVES = 2000


def to_json_text(obj: Any, compact: bool = False) -> str:
    """Strict JSON (NaN/inf -> null), sorted keys, numpy scalars and arrays converted; ``compact``: one line.

    :class:`EncodedJSON` values (from :func:`encoded`) are spliced in verbatim."""
    count, raw = [0], []
    tag = f"encoded-json-{secrets.token_hex(16)}"       # placeholder prefix no real string matches (2^-128)
    plain = _plain(obj, count, raw, tag)
    indent = 2 if count[0] <= _INDENT_MAX_LEAVES and not compact else None
    text = json.dumps(plain, indent=indent, sort_keys=True, allow_nan=False)
    for i, value in enumerate(raw):
        text = text.replace(json.dumps(f"{tag}:{i}"), value, 1)
    return text + "\n"


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_bytes(path, to_json_text(obj).encode())


def read_calibration(path: str | os.PathLike) -> dict:
    """The NQM calibration a compare.report directory holds: DIR/metrics.json (or that file) ->
    {lr, momentum, h [J], sigma2 [J or 1]} from ``setups[0].calibration`` (``lr``, ``momentum``, ``h`` in 1/LR units,
    ``noise_mass`` σ² per curvature in param²; other keys ignored). RunDirError, one line starting with the path,
    when it cannot be read or is not a usable calibration. The one reader of a calibration (theory.predict
    --from-report, empirical.run --from-report)."""
    p = Path(path)
    f = p / "metrics.json" if p.is_dir() else p
    try:
        cal = json.loads(f.read_text())["setups"][0]["calibration"]
        out = {"lr": float(cal["lr"]), "momentum": float(cal["momentum"]),
               "h": np.asarray(cal["h"], dtype=float).ravel(),
               "sigma2": np.asarray(cal["noise_mass"], dtype=float).ravel()}
    except OSError as e:
        raise RunDirError(f"{path}: cannot read {f} ({e.strerror or e})") from None
    except (ValueError, KeyError, IndexError, TypeError) as e:
        raise RunDirError(f"{path}: {f.name} has no usable setups[0].calibration with lr, momentum, h and "
                          f"noise_mass ({type(e).__name__}: {e})") from None
    h, s2 = out["h"], out["sigma2"]
    if h.size == 0 or s2.size not in (1, h.size) or not (np.all(np.isfinite(h)) and np.all(h > 0)) \
            or not (np.all(np.isfinite(s2)) and np.all(s2 >= 0)):
        raise RunDirError(f"{path}: calibration h must be finite > 0 and noise_mass finite >= 0 with one value per "
                          f"h; got {h.size} h and {s2.size} noise values")
    return out


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RunDirError(f"{path}: missing; a run directory holds {', '.join(RUN_FILES)}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunDirError(f"{path}: unreadable JSON ({e}); re-create the run") from None


# --------------------------------------------------------------------------------------------------------------
# Trajectory
# --------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Trajectory:
    """Time series of one run, grouped by cadence.

    ``series`` maps "GROUP/NAME" to an array whose first axis is time within GROUP; each GROUP has an int64
    "GROUP/step" array of optimiser steps (non-decreasing). Example::

        Trajectory({"eval/step": np.array([0, 100]), "eval/loss_raw": np.array([2.3, 1.1])})
    """

    series: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "series", {k: np.asarray(v) for k, v in self.series.items()})
        self.validate()

    def validate(self) -> None:
        groups: dict[str, list[str]] = {}
        for key in self.series:
            if key.count("/") < 1 or key.startswith("/") or key.endswith("/"):
                raise RunDirError(f"series name {key!r} must look like 'GROUP/NAME'")
            groups.setdefault(key.split("/", 1)[0], []).append(key)
        for g, keys in groups.items():
            if g == STATIC_GROUP:
                continue
            step_key = f"{g}/step"
            if step_key not in self.series:
                raise RunDirError(f"group {g!r} has no '{step_key}' array")
            step = self.series[step_key]
            if step.ndim != 1 or not np.issubdtype(step.dtype, np.integer):
                raise RunDirError(f"'{step_key}' must be a 1-D integer array, got {step.dtype}{list(step.shape)}")
            if step.size > 1 and np.any(np.diff(step) < 0):
                raise RunDirError(f"'{step_key}' must be non-decreasing")
            for k in keys:
                arr = self.series[k]
                if arr.ndim == 0 or arr.shape[0] != step.shape[0]:
                    raise RunDirError(f"'{k}' has {arr.shape[0] if arr.ndim else 0} rows, '{step_key}' has {step.shape[0]}")

    def groups(self) -> list[str]:
        return sorted({k.split("/", 1)[0] for k in self.series})

    def group(self, name: str) -> dict[str, np.ndarray]:
        """All series of one group, keyed by NAME (without the 'GROUP/' prefix)."""
        pre = f"{name}/"
        out = {k[len(pre):]: v for k, v in self.series.items() if k.startswith(pre)}
        if not out:
            raise KeyError(f"no group {name!r}; groups: {self.groups()}")
        return out

    def __getitem__(self, key: str) -> np.ndarray:
        return self.series[key]

    def __contains__(self, key: str) -> bool:
        return key in self.series

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``trajectory.npz`` atomically (uncompressed: fast, and loads with numpy alone)."""
        buf = io.BytesIO()
        np.savez(buf, __schema_version__=np.array(SCHEMA_VERSION), **dict(self.series))
        return atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Trajectory":
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except FileNotFoundError:
            raise RunDirError(f"{path}: missing") from None
        except Exception as e:  # zipfile.BadZipFile, ValueError, OSError: all mean "not a valid npz"
            raise RunDirError(f"{path}: not a readable .npz ({type(e).__name__}: {e})") from None
        version = int(data.pop("__schema_version__", -1))
        if version != SCHEMA_VERSION:
            raise RunDirError(f"{path}: schema_version {version}, this code reads {SCHEMA_VERSION}")
        return cls(data)


# --------------------------------------------------------------------------------------------------------------
# Environment record
# --------------------------------------------------------------------------------------------------------------

def _git(args: list[str], cwd: Path) -> str | None:
    try:
        r = subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.decode(errors="replace").strip() if r.returncode == 0 else None


def git_info(repo: Path | None = None) -> dict[str, Any]:
    """Git sha, dirty flag and a hash of the uncommitted diff, so a number can be traced to its code."""
    repo = repo or Path(__file__).resolve().parent.parent
    sha = _git(["rev-parse", "HEAD"], repo)
    if sha is None:
        return {"sha": None, "dirty": None, "diff_sha256": None}
    diff = _git(["diff", "HEAD"], repo) or ""
    return {"sha": sha, "dirty": bool(diff), "diff_sha256": hashlib.sha256(diff.encode()).hexdigest() if diff else None}


# Distributions whose versions env.json records: theory runs need only the first four (theory never imports torch)
THEORY_PACKAGES = ("numpy", "scipy", "sympy", "matplotlib")
ALL_PACKAGES = THEORY_PACKAGES + ("torch", "torchvision", "scikit-learn", "mlxtend")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def package_versions(names: tuple[str, ...]) -> dict[str, str]:
    """{name: version} for the installed distributions among ``names`` (absent ones are left out).

    Read from the ``NAME-VERSION.dist-info`` directory names on ``sys.path`` (the wheel format's layout, which
    pip writes for every install, editable ones included); ``importlib.metadata`` only for names not found that
    way. Why not importlib.metadata alone: importing it and eight lookups took 0.07–0.09 s on the 2-core dev
    machine, an eighth of a ``theory.predict`` call; the directory scan takes ~1 ms.
    """
    want = {_norm(n): n for n in names}
    found: dict[str, str] = {}
    for entry in sys.path:
        try:
            listing = os.listdir(entry or ".")
        except OSError:
            continue
        for f in listing:
            if f.endswith(".dist-info"):
                name, sep, version = f[: -len(".dist-info")].partition("-")
                key = _norm(name)
                if sep and key in want and want[key] not in found:
                    found[want[key]] = version
    missing = [n for n in names if n not in found]
    if missing:
        from importlib import metadata
        for n in missing:
            try:
                found[n] = metadata.version(n)
            except metadata.PackageNotFoundError:
                continue
    return {n: found[n] for n in names if n in found}


def env_info(extra: Mapping[str, Any] | None = None, packages: tuple[str, ...] = ALL_PACKAGES) -> dict[str, Any]:
    """Versions, platform and git state. ``extra`` adds caller facts (torch version, device, world size)."""
    packages = package_versions(packages)
    info = {
        "schema_version": SCHEMA_VERSION,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "packages": packages,
        "git": git_info(),
        "time_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    info.update(extra or {})
    return info


# --------------------------------------------------------------------------------------------------------------
# Run directories
# --------------------------------------------------------------------------------------------------------------

def refuse_used(out: str | os.PathLike) -> None:
    """Raise RunDirError if ``out`` exists and is not an empty directory: an earlier run is never overwritten."""
    path = Path(out)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise RunDirError(f"--out {out}: exists and is not an empty directory; choose a new path")


def new_run_dir(source: str, name: str, out: str | os.PathLike | None = None, root: Path = RUNS_ROOT) -> Path:
    """Create and return the run directory.

    With ``out``, that directory is used (created if missing; it must be empty or absent, so an earlier run is
    never overwritten by accident). Without, ``runs/{source}/{YYYYmmdd-HHMMSS}-{name}-{rand4}/``.
    """
    if out is not None:
        path = Path(out)
        refuse_used(path)
        path.mkdir(parents=True, exist_ok=True)
        return path
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = root / source / f"{stamp}-{name}-{secrets.token_hex(2)}"
    path.mkdir(parents=True, exist_ok=False)
    return path


def write_config(run: Path, source: str, config: Mapping[str, Any], command: list[str] | None = None) -> Path:
    return atomic_write_json(Path(run) / "config.json", {
        "schema_version": SCHEMA_VERSION,
        "source": source,
        "command": list(sys.argv if command is None else command),
        "config": dict(config),
    })


def read_config(run: str | os.PathLike, section: bool = True) -> dict:
    """A run directory's config.json (what :func:`write_config` wrote): its ``config`` section, or with
    ``section=False`` the whole document (schema_version, source, command, config). RunDirError (one line) if it is
    missing or not JSON."""
    doc = read_json(Path(run) / "config.json")
    if not isinstance(doc, dict):
        raise RunDirError(f"{Path(run) / 'config.json'}: not a run's config (expected a JSON object)")
    return doc.get("config", {}) if section else doc


def write_env(run: Path, extra: Mapping[str, Any] | None = None, packages: tuple[str, ...] = ALL_PACKAGES) -> Path:
    return atomic_write_json(Path(run) / "env.json", env_info(extra, packages))


def write_summary(run: Path, status: str, steps: int, **fields: Any) -> Path:
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
    return atomic_write_json(Path(run) / "summary.json",
                             {"schema_version": SCHEMA_VERSION, "status": status, "steps": int(steps), **fields})


@dataclass(frozen=True)
class Run:
    """A loaded run directory."""

    path: Path
    config: dict
    env: dict
    summary: dict
    trajectory: Trajectory

    @property
    def source(self) -> str:
        return self.config.get("source", "?")


def load_run(path: str | os.PathLike) -> Run:
    """Load and validate a run directory; raises :class:`RunDirError` with a one-line reason."""
    path = Path(path)
    if not path.is_dir():
        raise RunDirError(f"{path}: not a directory; pass a run directory (it holds {', '.join(RUN_FILES)})")
    missing = [f for f in RUN_FILES if not (path / f).is_file()]
    if missing:
        raise RunDirError(f"{path}: not a run directory (missing {', '.join(missing)})")
    config, env, summary = (read_json(path / f) for f in ("config.json", "env.json", "summary.json"))
    for fname, obj in (("config.json", config), ("summary.json", summary)):
        if not isinstance(obj, dict) or obj.get("schema_version") != SCHEMA_VERSION:
            got = obj.get("schema_version") if isinstance(obj, dict) else type(obj).__name__
            raise RunDirError(f"{path / fname}: schema_version {got}, this code reads {SCHEMA_VERSION}")
    if summary.get("status") not in STATUSES:
        raise RunDirError(f"{path / 'summary.json'}: status {summary.get('status')!r} not one of {STATUSES}")
    return Run(path, config, env, summary, Trajectory.load(path / "trajectory.npz"))
