"""Regenerate every figure that the given run directories allow (theory.md §7.2).

    python -m figures.build RUN_DIR [RUN_DIR ...] [--out figures/out]
    python -m figures.build                     # theory-only figures (nqm_equivalence_grid)

Each figure is ``<name>.png`` (dpi ~110) plus ``<name>.json`` (provenance: run dirs, their git sha, the command).
The figure modules only draw (``plot(data) -> Figure``); the data they draw is prepared by compare.figure_data from
run directories (via compare.analysis) and from theory/ closed forms. Bad input: one line on stderr, exit 2,
nothing written.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

from compare.figure_data import figure_data
from figures import (ellipsoid, ema_equivalence, fixed_batch_along_trajectory, gradient_alignment,
                     nqm_equivalence_grid, one_step_probe, structure_function, swa_equivalence,
                     two_point_vs_distance)
from common import style
from common.cli import DefaultsFormatter, OneLineParser, command_note, pipe_safe_stdout

# One plot function per figure that compare.figure_data prepares (the same names: tests/figures checks it).
FIGURES = {"nqm_equivalence_grid": nqm_equivalence_grid.plot, "one_step_probe": one_step_probe.plot,
           "fixed_batch_along_trajectory": fixed_batch_along_trajectory.plot,
           "ema_equivalence": ema_equivalence.plot, "swa_equivalence": swa_equivalence.plot,
           "two_point_vs_distance": two_point_vs_distance.plot, "ellipsoid": ellipsoid.plot,
           "gradient_alignment": gradient_alignment.plot, "structure_function": structure_function.plot}
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
    for name, data in figure_data(analyses).items():
        buf = io.BytesIO()
        with style.context():   # the layout (ticks, labels) is computed when the figure is drawn
            FIGURES[name](data).savefig(buf, format="png", dpi=style.DPI)
        png = atomic_write_bytes(Path(out) / f"{name}.png", buf.getvalue())
        atomic_write_json(Path(out) / f"{name}.json",
                          {"figure": name, "runs": prov_runs if name != "nqm_equivalence_grid" else [],
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
