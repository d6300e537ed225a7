"""theory/__init__.py re-exports the specifications (one definition of each average for theory and training) and
loads the heavier functions on first use, without shadowing the submodules."""
import subprocess
import sys

import theory
from theory import spec, stationary


def test_specs_are_the_same_objects():
    assert theory.EMA is spec.EMA and theory.TwoPoint is spec.TwoPoint and theory.variant_name is spec.variant_name
    assert theory.max_stable_alpha is stationary.max_stable_alpha and theory.max_stable_alpha(0.9) == 3.8
    assert set(theory.__all__) >= {"EMA", "SWA", "TwoPoint", "NPoint", "NQM", "SGD", "parse_variant_name",
                                   "rank_ema_decays", "rank_swa_starts", "equivalent_schedule"}
    from theory import advice
    assert theory.rank_ema_decays is advice.rank_ema_decays and theory.equivalent_schedule is advice.equivalent_schedule


def test_submodule_names_still_import_the_submodules():
    from theory import equivalence
    assert equivalence.__name__ == "theory.equivalence"


def test_importing_theory_loads_neither_torch_nor_scipy():
    code = "import sys, theory; theory.EMA(0.9); print('torch' in sys.modules, 'scipy' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.split() == [
        "False", "False"]
