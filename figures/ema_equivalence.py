"""F-c EMA vs its equivalent schedule (theory.md §3.3, §3.10): eval loss of the raw iterate and each EMA decay
(observed, NQM lines), and the constant-LR switch the model matched to each EMA, predicted before it ran (±2 s.e.)
beside what it did. Without a branch run only the EMA curves are drawn, and the figure says so. Data: see
figures/_equivalence.py."""

from figures._equivalence import plot_equivalence

MISSING = "no equivalent-LR branch run given: the EMA ⇔ LR-drop comparison is not drawn"


def plot(data: dict):
    """One axis: raw + EMA variants (obs markers with seed band, NQM lines) and dashed equivalent branches."""
    return plot_equivalence(data, "EMA vs matched LR switch, predicted before it ran",
                            "EMA variants vs NQM", MISSING)
