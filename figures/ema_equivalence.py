"""F-c EMA vs its equivalent-LR run (theory.md §3.3, §7.2 item 3): eval loss of the raw iterate, each EMA decay and
the constant-LR branch at λ_eq; NQM predictions as lines. Data: see figures/_equivalence.py."""

from figures._equivalence import plot_equivalence


def plot(data: dict):
    """One axis: raw + EMA variants (obs markers with seed band, NQM lines) and dashed equivalent branches."""
    return plot_equivalence(data, "EMA ⇔ LR drop")
