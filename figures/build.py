"""Regenerate every figure that the given run directories allow (theory.md §7.2).

    python -m figures.build RUN_DIR [RUN_DIR ...] [--out figures/out]
    python -m figures.build                     # theory-only figures (nqm_equivalence_grid)

Each figure is ``<name>.png`` (dpi ~110) plus ``<name>.json`` (provenance: run dirs, their git sha, the command).
The figure modules only draw (``plot(data) -> Figure``); the data they draw is prepared by compare.figure_data from
run directories (via compare.analysis) and from theory/ closed forms. Bad input: one line on stderr, exit 2,
nothing written.

The figures are the entries of ``compare.figure_data.FIGURES``; figure NAME is drawn by ``plot`` of the module
``figures.NAME``, found by name. Adding a figure is:

1. a data function in compare/figure_data.py returning a dict of numbers and arrays (or None when the runs do not
   allow the figure);
2. one entry ``"NAME": FigureSpec(that_function, per="theory" | "setup" | "all")`` in ``FIGURES`` there (its
   position is the drawing order);
3. a module figures/NAME.py with one public ``plot(data) -> matplotlib.figure.Figure``.

Nothing in this file changes; the files written are NAME.png and NAME.json.
"""

from __future__ import annotations

import importlib
import io
import sys
from pathlib import Path

from compare import figure_data as fd
from common import style
from common.cli import DefaultsFormatter, OneLineParser, command_note, pipe_safe_stdout


def plot_function(name: str):
    """``plot`` of the module figures.<name>: the function that draws figure ``name``."""
    return importlib.import_module(f"figures.{name}").plot


# The plot function of every figure compare.figure_data registers (the same names, the same order).
FIGURES = {name: plot_function(name) for name in fd.FIGURES}
DEFAULT_OUT = Path("figures/out")


# ------------------------------------------------------------------------------------------------- rendering

def render(analyses: list, out: Path, command: list[str]) -> list[Path]:
    """Plot and write every figure the analyses allow (compare.figure_data.figure_data) as PNG + provenance JSON
    into ``out``. Returns the PNG paths."""
    from common.rundir import atomic_write_bytes, atomic_write_json
    runs = [r for a in analyses for r in (*a.setup.base, *a.setup.branches)]
    prov_runs = [{"path": str(r.path), "git_sha": (r.env.get("git") or {}).get("sha"),
                  "git_dirty": (r.env.get("git") or {}).get("dirty")} for r in runs]
    written = []
    for name, data in fd.figure_data(analyses).items():
        buf = io.BytesIO()
        with style.context():   # the layout (ticks, labels) is computed when the figure is drawn
            FIGURES[name](data).savefig(buf, format="png", dpi=style.DPI)
        png = atomic_write_bytes(Path(out) / f"{name}.png", buf.getvalue())
        atomic_write_json(Path(out) / f"{name}.json",
                          {"figure": name, "runs": [] if fd.FIGURES[name].per == "theory" else prov_runs,
                           "command": command, "module": f"figures.{name}", "data": "compare.figure_data"})
        written.append(png)
    return written


def build_parser() -> OneLineParser:
    # DefaultsFormatter: "(default: X)" once per option, none for None/False (the convention of every CLI here)
    p = OneLineParser(prog="python -m figures.build", description=__doc__.split("\n\n")[0],
                      epilog=command_note("figures.build"), formatter_class=DefaultsFormatter)
    p.add_argument("runs", nargs="*", help="run directories (seeds and branches of one or more setups)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="output folder")
    p.add_argument("--split", choices=("test", "train"), default="test", help="which eval loss to compare")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from compare.analysis import analyse
    from compare.load import group_runs, load_runs
    from common.rundir import RunDirError
    try:
        analyses = [analyse(s, split=args.split) for s in group_runs(load_runs(args.runs))] if args.runs else []
    except (RunDirError, ValueError, KeyError) as e:
        print(f"figures.build: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        print(f"figures.build: --out {out} is a file; give a folder for the PNGs", file=sys.stderr)
        return 2
    try:
        paths = render(analyses, out, ["python", "-m", "figures.build", *(argv if argv is not None else sys.argv[1:])])
    except OSError as e:   # each figure is written atomically: the ones before the failure are complete
        print(f"figures.build: cannot write {e.filename or out}: {e.strerror or e}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0


def cli(argv: list[str] | None = None) -> int:
    """The command avglr-figures and ``python -m figures.build``: :func:`main` with a pipe-safe stdout."""
    with pipe_safe_stdout():   # `... | head`: every file is still written, no BrokenPipeError traceback
        return main(argv)


if __name__ == "__main__":
    sys.exit(cli())
