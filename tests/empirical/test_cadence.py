"""When evaluations and measurements are due (empirical.cadence): a small timeline worked out by hand, the bank's
span rule, and the presets' promise that their measurements share the evaluations' BN recomputation."""
from __future__ import annotations

from dataclasses import replace

import pytest

from empirical import config, presets
from empirical.cadence import Cadence, bank_uses

# steps 100; regular evaluation every 20; dense (test split) every 10 in 40..80; bank every 5, span 10, K = 2; the
# other measurements off
SMALL = replace(config.RunConfig(), steps=100, schedule="constant", eval_every=20, eval_dense_every=10,
                eval_dense_from=40, eval_dense_until=80, bank_every=5, bank_span=10, bank_size=2, probe_every=0,
                align_every=0, curv_every=0)


def test_bank_uses_sit_inside_the_dense_window_away_from_its_ends():
    # window 40..80 narrowed by the span to 50..70; the two uses at the middles of its halves, 55 and 65
    assert bank_uses(SMALL) == [55, 65]


def test_small_timeline_by_hand():
    c = Cadence.of(SMALL)
    assert [s for s in range(100) if c.measurements(s)] == [0, 20, 40, 45, 50, 55, 60, 65, 70, 75, 80]
    assert [d for d in range(1, 101) if c.evaluation(d) == "regular"] == [20, 40, 60, 80, 100]
    assert [d for d in range(1, 101) if c.evaluation(d) == "dense"] == [50, 70]
    # bank steps that no evaluation prepares: 45, 55, 65, 75
    assert [s for s in range(100) if c.needs_recompute(s)] == [45, 55, 65, 75]
    assert c.counts() == {"bank": 11, "probe": 0, "align": 0, "curv": 0, "recompute": 4, "regular": 5, "dense": 2}


def test_span_zero_measures_the_bank_everywhere():
    c = Cadence.of(replace(SMALL, bank_span=0))
    assert [s for s in range(100) if c.measurements(s)] == list(range(0, 100, 5))


def test_other_measurements_keep_their_multiples():
    c = Cadence.of(replace(SMALL, bank_every=0, probe_every=30, align_every=25, curv_every=50))
    assert c.measurements(0) == ("probe", "align", "curv")
    assert c.measurements(50) == ("align", "curv")
    assert c.measurements(60) == ("probe",)
    assert c.measurements(75) == ("align",) and c.needs_recompute(75)   # 75 is not an evaluation step
    assert not c.needs_recompute(60)                                    # 60 is


@pytest.mark.parametrize("name", ["digits", "mnist", "quadratic"])
def test_small_presets_measure_only_where_an_evaluation_prepared_the_weights(name):
    cfg = presets.PRESETS[name]
    assert Cadence.of(cfg).counts()["recompute"] == 0
    uses = bank_uses(cfg)
    dense = cfg.dense_eval_steps()
    assert all(dense[0] <= u - cfg.bank_span and u + cfg.bank_span <= dense[-1] for u in uses)
    assert all(u % cfg.bank_every == 0 for u in uses)


def test_a_shortened_run_keeps_the_full_runs_bank():
    cfg = presets.PRESETS["digits"]
    assert bank_uses(replace(cfg, max_steps=500)) == bank_uses(cfg)
