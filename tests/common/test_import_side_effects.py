"""Importing the project changes nothing in matplotlib: every module of the five packages is imported in a fresh
interpreter (modules that need torch included) and matplotlib's backend and rcParams are the same afterwards. The
house style (common.style.RC) applies only while a figure is drawn, and the figures are drawn with the object API,
so no module has a reason to choose a backend or to touch the global rcParams."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("common", "theory", "empirical", "compare", "figures")

# The interpreter starts on a non-interactive backend other than Agg, so that a module choosing Agg shows up as a
# change of backend (with Agg to begin with, matplotlib.use("Agg") would change nothing that could be seen).
START_BACKEND = "svg"

CODE = f"""
import importlib, json, pkgutil, sys
import matplotlib
backend = matplotlib.get_backend()
before = dict(matplotlib.rcParams)
imported, failed = [], []
for pkg in {PACKAGES!r}:
    mod = importlib.import_module(pkg)
    imported.append(pkg)
    for info in pkgutil.walk_packages(mod.__path__, pkg + ".", onerror=lambda name: failed.append([name, "walk"])):
        try:
            importlib.import_module(info.name)
            imported.append(info.name)
        except BaseException as e:   # a module that cannot be imported is reported, never skipped
            failed.append([info.name, f"{{type(e).__name__}}: {{e}}"])
after = dict(matplotlib.rcParams)
changed = sorted(k for k in set(before) | set(after) if before.get(k, "<absent>") != after.get(k, "<absent>"))
print(json.dumps({{"backend": [backend, matplotlib.get_backend()], "changed": changed,
                  "values": {{k: [repr(before.get(k)), repr(after.get(k))] for k in changed}},
                  "imported": imported, "failed": failed}}))
"""


def _run() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MPL", "PYTHON"))}
    env.update(PYTHONPATH=str(ROOT), MPLBACKEND=START_BACKEND)
    r = subprocess.run([sys.executable, "-c", CODE], cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_importing_every_module_leaves_matplotlib_alone():
    out = _run()
    # A module of an optional extra that is not installed says so on import ("... needs X: pip install ...'.[x]'");
    # it is named in a warning (`make test` installs every extra, so there it is checked like the rest).
    extra_missing = [m for m, why in out["failed"] if why.startswith("ImportError") and "pip install" in why]
    assert [f for f in out["failed"] if f[0] not in extra_missing] == [], out["failed"]
    if extra_missing:
        warnings.warn(f"not checked, optional extra not installed: {', '.join(extra_missing)}")
    # every .py of the five packages was imported (none skipped by the walk)
    on_disk = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
               for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    assert on_disk <= set(out["imported"]) | set(extra_missing), sorted(on_disk - set(out["imported"]))
    assert {"common.style", "figures.build", "theory.plotting", "empirical.run"} <= set(out["imported"])
    before, after = out["backend"]
    assert before.lower() == START_BACKEND and after.lower() == START_BACKEND, out["backend"]
    assert out["changed"] == [], out["values"]


def test_drawing_a_figure_restores_rcparams():
    """The house style is applied while a figure is built and dropped afterwards."""
    import matplotlib

    from common import style
    from figures import two_point_vs_distance

    before = dict(matplotlib.rcParams)
    fig = two_point_vs_distance.plot({"n": 1, "gaps": [10, 100], "obs": [[1.0, 0.9]], "theory": None,
                                      "baseline": 1.0, "half_lr": None})
    assert dict(matplotlib.rcParams) == before
    ax = fig.axes[0]
    assert ax.title.get_fontsize() == style.RC["axes.titlesize"]
    assert ax.get_legend().get_texts()[0].get_fontsize() == style.RC["legend.fontsize"]
    assert not ax.spines["top"].get_visible()
