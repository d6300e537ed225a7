"""One style for every figure: fixed colours per method, theory as lines, observations as markers
with seed bands, n stated in the legend. Figures are built with ``new_figure`` (object API, no pyplot: no backend
is needed and no global figure state is shared) and saved small (dpi ~110).

Importing this module changes nothing in matplotlib: the house rcParams (``RC``) apply only inside
:func:`context`, which every figure module's ``plot`` enters through :func:`styled`; whoever saves a figure does so
inside :func:`context` too (ticks and their labels are laid out when the figure is drawn, i.e. at ``savefig``)."""

from __future__ import annotations

import functools

import matplotlib
import numpy as np
from matplotlib.figure import Figure

DPI = 110
RAW = "#7f7f7f"
SWA = "#2ca02c"
THEORY = "#222222"
EMA_BLUES = ("#9ecae1", "#4292c6", "#08519c", "#08306b")
TWO_POINT_ORANGES = ("#fdae6b", "#f16913", "#d94801", "#8c2d04")
POINTS = "#9467bd"
BRANCH_STYLE = {"linestyle": "--", "linewidth": 1.4}
THEORY_STYLE = {"linestyle": "-", "linewidth": 1.3}
OBS_STYLE = {"marker": "o", "markersize": 3, "linestyle": "none"}
RC = {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "legend.fontsize": 6.5, "xtick.labelsize": 7,
      "ytick.labelsize": 7, "axes.spines.top": False, "axes.spines.right": False}


def context():
    """The house style as a context manager (``matplotlib.rc_context(RC)``): the global rcParams are restored on
    exit, so drawing a figure leaves a caller's own matplotlib settings as they were."""
    return matplotlib.rc_context(RC)


def styled(plot):
    """Decorator for a figure module's ``plot(data) -> Figure``: its artists are created under :func:`context`."""
    @functools.wraps(plot)
    def wrapper(*args, **kwargs):
        with context():
            return plot(*args, **kwargs)
    return wrapper


def colour(variant: str, index: int = 0) -> str:
    """Colour of a variant name (raw, ema_<γ>, swa, two_point_k<k>, points_...); index picks the shade."""
    if variant.startswith("ema"):
        return EMA_BLUES[min(index, len(EMA_BLUES) - 1)]
    if variant.startswith("two_point"):
        return TWO_POINT_ORANGES[min(index, len(TWO_POINT_ORANGES) - 1)]
    if variant == "swa":
        return SWA
    if variant.startswith("points"):
        return POINTS
    return RAW


def variant_colours(names) -> dict[str, str]:
    """One colour per variant name, shades spread over each family in the given order (any number of EMA decays or
    two-point lags stays distinguishable): EMA blues, two-point oranges, SWA green, N-point purples, raw grey."""
    from matplotlib import colormaps, colors
    names = list(names)
    maps = {"ema": "Blues", "two_point": "Oranges", "points": "Purples"}
    out = {}
    for fam, cmap in maps.items():
        group = [n for n in names if n.startswith(fam)]
        for i, n in enumerate(group):
            x = 0.45 + 0.5 * (i / (len(group) - 1) if len(group) > 1 else 0.5)
            out[n] = colors.to_hex(colormaps[cmap](x))
    return {n: out.get(n, colour(n)) for n in names}


def new_figure(ncols: int = 1, nrows: int = 1, width: float = 3.4, height: float = 2.5) -> tuple[Figure, np.ndarray]:
    with context():
        fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.ravel():
        ax.tick_params(which="both", labelsize=RC["xtick.labelsize"])
        ax.title.set_fontsize(RC["axes.titlesize"])
        ax.xaxis.label.set_fontsize(RC["axes.labelsize"])
        ax.yaxis.label.set_fontsize(RC["axes.labelsize"])
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    return fig, axes


def observed(ax, x, seeds, colour_: str, label: str) -> None:
    """Seed mean as markers, ±1 s.d. band when n > 1; n in the label. ``seeds`` is [n, T]."""
    y = np.atleast_2d(np.asarray(seeds, float))
    n = int(np.sum(np.any(np.isfinite(y), axis=1)))
    with np.errstate(invalid="ignore"):
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(y, axis=0)
            sd = np.nanstd(y, axis=0, ddof=1) if n > 1 else None
    ax.plot(x, mean, color=colour_, label=f"{label} (obs, n={n})", **OBS_STYLE)
    if sd is not None:
        ax.fill_between(x, mean - sd, mean + sd, color=colour_, alpha=0.2, linewidth=0)


def theory(ax, x, y, colour_: str, label: str) -> None:
    ax.plot(x, y, color=colour_, label=f"{label} (NQM)", **THEORY_STYLE)


def legend(ax, outside: bool = False) -> None:
    """Legend inside the axis, or (``outside``) in a column to its right, for figures with many entries."""
    if ax.get_legend_handles_labels()[0]:
        kw = {"loc": "upper left", "bbox_to_anchor": (1.02, 1.0), "borderaxespad": 0.0} if outside else {}
        ax.legend(frameon=False, fontsize=RC["legend.fontsize"], **kw)
