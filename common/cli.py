"""The command-line contract shared by the entry points (theory.predict, empirical.run, compare.report,
figures.build, empirical.posthoc, compare.branch_prediction; each also installed as a command,
``CONSOLE_SCRIPTS``); imports no torch.

Bad input gets ONE line on stderr naming the problem, exit status 2 and nothing written. argparse's own
``error`` prints a usage block of several lines first; ``OneLineParser`` keeps only the message.
A reader that goes away (``... | head``) must not turn into a traceback or kill a run: ``pipe_safe_stdout``.
"""
from __future__ import annotations

import argparse
import os
import sys
from contextlib import contextmanager


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


# Each entry point is also installed as a command (pyproject.toml [project.scripts]); its --help names both forms.
CONSOLE_SCRIPTS = {"theory.predict": "avglr-predict", "empirical.run": "avglr-run", "compare.report": "avglr-report",
                   "figures.build": "avglr-figures", "empirical.posthoc": "avglr-posthoc",
                   "compare.branch_prediction": "avglr-predict-branch"}


def command_note(module: str) -> str:
    """The --help epilog of entry point ``module``: the installed command that runs the same thing."""
    return f"Installed as the command {CONSOLE_SCRIPTS[module]} (the same as python -m {module})."


def keep_freed_memory() -> None:
    """Ask glibc to reuse freed memory instead of handing it back to the OS at every ``free``.

    The moment engine allocates and frees thousands of ~1 MB arrays (3×3×D doubles, D = 10,000 directions). Above
    glibc's default 128 KiB threshold each is a fresh ``mmap`` whose pages fault in on first touch. Measured on the
    2-core machine of this project (the scripts/bench_theory.py problem, forward pass in a fresh process): 0.86-1.06 s
    by default, 0.46-0.50 s with these two settings. Process-wide, so it is called by the CLI entry points only,
    never on import. A no-op where the C library has no ``mallopt`` (macOS, musl).
    """
    import ctypes

    try:
        libc = ctypes.CDLL(None)                          # the C library the interpreter is linked with
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3          # glibc's malloc.h
    mallopt(M_TRIM_THRESHOLD, 256 << 20)                  # keep up to 256 MiB of freed heap for reuse
    mallopt(M_MMAP_THRESHOLD, 32 << 20)                   # serve blocks below 32 MiB (glibc's maximum) from the heap


class _PipeSafeStdout:
    """sys.stdout that goes quiet instead of raising BrokenPipeError when its reader has gone; everything else is
    delegated to the real stream."""

    def __init__(self, stream):
        self._stream = stream

    def _closed_reader(self):  # the fix Python's docs give for SIGPIPE: point the fd at /dev/null, keep going
        os.dup2(os.open(os.devnull, os.O_WRONLY), self._stream.fileno())

    def write(self, text):
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._closed_reader()
            return len(text)

    def flush(self):
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._closed_reader()

    def __getattr__(self, name):
        return getattr(self._stream, name)


@contextmanager
def pipe_safe_stdout():
    """Within the block, writes to a closed stdout pipe are dropped (the work goes on); restored afterwards."""
    real = sys.stdout
    sys.stdout = safe = real if isinstance(real, _PipeSafeStdout) else _PipeSafeStdout(real)
    try:
        yield
    finally:   # flush here: output still buffered would otherwise meet the closed pipe at exit ("Exception ignored")
        safe.flush()
        sys.stdout = real


# ------------------------------------------------------------------------------------------------ --help defaults
# One convention for every CLI's --help: an option whose default means something shows it once, at the end of its
# help, as "(default: X)"; a default of None (nothing given: the help says what happens), False (a switch that is
# off) or an empty list shows nothing. A help text that already says "(default: ...)" (e.g. "(default: T/2)",
# a default computed from other flags) is left as it is.

def default_text(value) -> str:
    """The shown form of a default, or "" when the convention shows none (None, False, "", empty tuple/list)."""
    if value is None or value is False or value is argparse.SUPPRESS or value == "" or value == () or value == []:
        return ""
    if value is True:
        return "on"
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value))
    return str(value)


def with_default(help_text: str, value) -> str:
    """``help_text`` + " (default: X)" by the convention above (unchanged when it already names its default)."""
    shown = default_text(value)
    if not shown or "(default:" in help_text:
        return help_text
    return f"{help_text} (default: {shown})"


class DefaultsFormatter(argparse.HelpFormatter):
    """argparse formatter that appends " (default: X)" by the convention above (argparse's own
    ArgumentDefaultsHelpFormatter also prints "(default: None)" and "(default: False)")."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.option_strings and action.default is not argparse.SUPPRESS:
            # argparse %-formats help strings: a literal % in a default must be doubled
            text = with_default(text, action.default if not isinstance(action.default, str)
                                else action.default.replace("%", "%%"))
        return text
