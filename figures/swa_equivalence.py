"""F-d SWA vs its equivalent schedules (theory.md §3.4, §3.10): the 1/t cooldown and the matched constant-LR switch
from the SWA's start, each predicted before it ran (±2 s.e.) beside what it did. Without a branch run only the SWA
curve is drawn, and the figure says so. Data: see figures/_equivalence.py."""

from figures._equivalence import plot_equivalence

MISSING = "no hyperbolic-cooldown branch run given: the SWA ⇔ cooldown comparison is not drawn"


def plot(data: dict):
    """One axis: raw + SWA (obs markers with seed band, NQM lines) and the dashed hyperbolic-cooldown branch."""
    return plot_equivalence(data, "SWA vs cooldown and LR switch, predicted before they ran", "SWA vs NQM", MISSING)
