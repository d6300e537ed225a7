"""Markdown table of raw vs averaged test loss/accuracy over the seeds of one setup (the tables of docs/results.md).

    python scripts/seed_table.py runs/reproduce/<stamp>/digits --window 600 1200

Reads the base runs (not branches) in the folder: mean ± s.d. over seeds of the test loss averaged over the window
of evaluation steps, and of the final test loss and accuracy (summary.json). Reads files only (no torch).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common.rundir import RunDirError, load_run  # noqa: E402


def table(runs, lo: int, hi: int) -> str:
    t0 = runs[0].trajectory
    names = ["raw"] + [k[len("eval/test_loss_"):] for k in t0.series
                       if k.startswith("eval/test_loss_") and k != "eval/test_loss_raw"]
    sd = (lambda x: np.std(x, ddof=1)) if len(runs) > 1 else (lambda x: float("nan"))
    f = lambda x: f"{np.mean(x):.4f} ± {sd(x):.4f}"   # noqa: E731
    rows = [f"| variant | test loss, mean over steps {lo}–{hi} | final test loss | final test accuracy |",
            "|---|---|---|---|"]
    for n in names:
        w, fl, fa = [], [], []
        for r in runs:
            t = r.trajectory
            m = (t["eval/step"] >= lo) & (t["eval/step"] <= hi)
            w.append(np.nanmean(t[f"eval/test_loss_{n}"][m]))
            fl.append(r.summary["eval"][n]["loss"])
            fa.append(r.summary["eval"][n]["acc"])
        rows.append(f"| {n} | {f(w)} | {f(fl)} | {f(fa)} |")
    return "\n".join(rows) + f"\n\n(n = {len(runs)} seeds; ± is the s.d. over seeds)"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python scripts/seed_table.py", description=__doc__.split("\n\n")[0])
    p.add_argument("folder", help="folder whose sub-folders are run directories")
    p.add_argument("--window", nargs=2, type=int, default=(600, 1200), metavar=("LO", "HI"), help="steps")
    a = p.parse_args(argv)
    try:
        runs = [load_run(d) for d in sorted(Path(a.folder).iterdir()) if (d / "config.json").is_file()]
    except (OSError, RunDirError) as e:
        print(f"seed_table: {e}", file=sys.stderr)
        return 2
    # base runs only: neither branches nor post-hoc averages of a base run's checkpoints (empirical.posthoc)
    runs = [r for r in runs if not r.config.get("config", {}).get("branch_from") and "posthoc" not in r.config.get(
        "config", {})]
    if not runs:
        print(f"seed_table: no base run directory under {a.folder}", file=sys.stderr)
        return 2
    print(table(runs, *a.window))
    return 0


if __name__ == "__main__":
    sys.exit(main())
