"""F-d SWA vs its equivalent 1/t cooldown (theory.md §3.4, §7.2 item 4), the branch from its branch step. Without a
branch run only the SWA curve is drawn, and the figure says so. Data: see figures/_equivalence.py."""

from figures._equivalence import plot_equivalence

MISSING = "no hyperbolic-cooldown branch run given: the SWA ⇔ cooldown comparison is not drawn"


def plot(data: dict):
    """One axis: raw + SWA (obs markers with seed band, NQM lines) and the dashed hyperbolic-cooldown branch."""
    return plot_equivalence(data, "SWA ⇔ hyperbolic cooldown", "SWA vs NQM", MISSING)
