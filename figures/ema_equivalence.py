"""F-c EMA vs its equivalent-LR run (theory.md §3.3, §7.2 item 3): eval loss of the raw iterate, each EMA decay and
the constant-LR branch at λ_eq from its branch step; NQM predictions as lines. Without a branch run only the EMA
curves are drawn, and the figure says so. Data: see figures/_equivalence.py."""

from figures._equivalence import plot_equivalence

MISSING = "no equivalent-LR branch run given: the EMA ⇔ LR-drop comparison is not drawn"


def plot(data: dict):
    """One axis: raw + EMA variants (obs markers with seed band, NQM lines) and dashed equivalent branches."""
    return plot_equivalence(data, "EMA ⇔ LR drop", "EMA variants vs NQM", MISSING)
