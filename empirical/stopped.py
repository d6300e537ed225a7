"""How a training run ends early: ``Stopped``, raised by empirical.train and turned into the exit code by
empirical.run (its own module, so neither imports the other for it, and ``python -m empirical.run`` catches the same
class the loop raises)."""
from __future__ import annotations

from pathlib import Path


class Stopped(Exception):
    """The run ended early with ``status`` (diverged / interrupted); files are written. ``code`` is the exit code."""

    def __init__(self, run_dir: Path, status: str, code: int, message: str):
        super().__init__(message)
        self.run_dir, self.status, self.code = run_dir, status, code
