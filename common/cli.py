"""The command-line contract shared by the entry points (theory.predict, empirical.run, compare.report,
figures.build); imports no torch.

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
