"""The branch-schedule syntax has one parser (theory.branchspec.BranchSchedule): every form round-trips through
str(), each malformed form gets its own one-line message naming the accepted forms, GAMMA is checked by
theory.spec.check_ema_decay (0 ≤ γ < 1) and nothing else, and the command line (validation, --from-report) and
branch_lr refuse a text with the parser's own message. The EMA decays of a run are distinct by theory.spec's one
check, whether they come from the command line or from WeightAverages."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from empirical import config as C, schedules
from empirical import flags as F
from theory.branchspec import FORMS, BranchSchedule, BranchScheduleError
from theory import spec

CANONICAL = ["half", "scale:0.25", "scale:2", "constant:0.01", "ema:0.99", "ema:0.99:0.125", "ema:0", "ema:0:3.5",
             "swa", "swa:2.5", "hyperbolic:100", "hyperbolic:1e-05"]


@pytest.mark.parametrize("text", CANONICAL)
def test_every_form_round_trips(text):
    b = BranchSchedule.parse(text)
    assert str(b) == text and BranchSchedule.parse(str(b)) == b


@pytest.mark.parametrize("text, want", [
    ("half", BranchSchedule("half")),
    ("scale:0.5", BranchSchedule("scale", 0.5)),
    ("constant:1e-3", BranchSchedule("constant", 0.001)),
    ("ema:0.999", BranchSchedule("ema", 0.999)),
    ("ema:0.999:4", BranchSchedule("ema", 0.999, 4.0)),
    ("swa", BranchSchedule("swa")),
    ("swa:0.7", BranchSchedule("swa", None, 0.7)),
    ("hyperbolic:250", BranchSchedule("hyperbolic", 250.0)),
])
def test_parsed_fields(text, want):
    got = BranchSchedule.parse(text)
    assert got == want and got.needs_h == (text in ("ema:0.999", "swa"))


def test_non_canonical_numbers_read_back_as_the_same_schedule():
    assert str(BranchSchedule.parse("ema:0.990:2.0")) == "ema:0.99:2"
    assert str(BranchSchedule.parse("constant:1e-3")) == "constant:0.001"


def test_with_h_completes_ema_and_swa_only():
    assert str(BranchSchedule.parse("ema:0.99").with_h(0.125)) == "ema:0.99:0.125"
    assert str(BranchSchedule.parse("swa").with_h(3.7)) == "swa:3.7"
    with pytest.raises(BranchScheduleError, match="H must be finite and > 0"):
        BranchSchedule.parse("swa").with_h(float("nan"))
    with pytest.raises(BranchScheduleError, match="only ema and swa"):
        BranchSchedule.parse("half").with_h(1.0)


MALFORMED = [
    ("", "no schedule given"),
    ("quarter", "unknown kind 'quarter'"),
    ("Half", "unknown kind 'Half'"),
    ("half:2", "half is written half (no value)"),
    ("scale", "scale is written scale:F"),
    ("scale:1:2", "scale is written scale:F"),
    ("constant", "constant is written constant:LR"),
    ("ema", "ema is written ema:GAMMA or ema:GAMMA:H"),
    ("ema:0.9:1:2", "ema is written ema:GAMMA or ema:GAMMA:H"),
    ("swa:1:2", "swa is written swa or swa:H"),
    ("hyperbolic", "hyperbolic is written hyperbolic:TAU"),
    ("scale:x", "F must be a number, got 'x'"),
    ("constant:", "LR must be a number, got ''"),
    ("ema:abc:1", "GAMMA must be a number, got 'abc'"),
    ("ema:0.9:h", "H must be a number, got 'h'"),
    ("scale:-1", "F must be finite and > 0, got -1"),
    ("constant:0", "LR must be finite and > 0, got 0"),
    ("ema:0.9:0", "H must be finite and > 0, got 0"),
    ("swa:inf", "H must be finite and > 0, got inf"),
    ("hyperbolic:nan", "TAU must be finite and > 0, got nan"),
]


@pytest.mark.parametrize("text, what", MALFORMED)
def test_each_malformed_form_has_its_one_line_message(text, what):
    with pytest.raises(BranchScheduleError) as e:
        BranchSchedule.parse(text)
    msg = str(e.value)
    assert msg == f"--branch-schedule {text!r}: {what}; accepted forms: {FORMS}"
    assert "\n" not in msg and isinstance(e.value, ValueError)


def _decay_message(gamma: float) -> str:
    with pytest.raises(ValueError) as e:
        spec.check_ema_decay(gamma)
    return str(e.value)


@pytest.mark.parametrize("text, gamma", [("ema:1", 1.0), ("ema:-0.1", -0.1), ("ema:1.5:2", 1.5),
                                         ("ema:nan", float("nan"))])
def test_gamma_is_checked_by_check_ema_decay(text, gamma):
    with pytest.raises(BranchScheduleError) as e:
        BranchSchedule.parse(text)
    assert str(e.value) == f"--branch-schedule {text!r}: GAMMA: {_decay_message(gamma)}; accepted forms: {FORMS}"


def test_ema_zero_is_the_iterate_and_still_has_an_equivalent_lr():
    # γ = 0: β = 1, λ_eq = lr0·1/(1 + λ_eff·H); lr0 0.05, μ 0.9 (λ_eff 0.5), H 2: 0.05/2 = 0.025
    assert BranchSchedule.parse("ema:0:2") == BranchSchedule("ema", 0.0, 2.0)
    lr = schedules.branch_lr("ema:0:2", 0.05, 0.9, 10).lr_at(np.array([10, 50]))
    assert lr.tolist() == pytest.approx([0.025, 0.025])
    cfg = F.from_cli(["smoke", "--branch-from", "x.pt", "--branch-schedule", "ema:0:2"])
    assert cfg.branch_schedule == "ema:0:2"


# ------------------------------------------------------------------------- the same refusal on every path

@pytest.mark.parametrize("text", ["quarter", "scale:x", "swa:-1", "ema:1:2", "ema:-0.1:2", "half:1"])
def test_command_line_and_branch_lr_refuse_with_the_parser_message(text):
    with pytest.raises(BranchScheduleError) as e:
        BranchSchedule.parse(text)
    want = str(e.value)
    with pytest.raises(C.ConfigError) as run_err:
        F.from_cli(["smoke", "--branch-from", "x.pt", "--branch-schedule", text])
    assert str(run_err.value) == want
    with pytest.raises(C.ConfigError) as lr_err:
        schedules.branch_lr(text, 0.05, 0.9, 0)
    assert str(lr_err.value) == want


def _report(folder, lr=0.05, momentum=0.9, h=1.0, noise=1.0):
    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps({"schema_version": 1, "setups": [{"calibration": {
        "lr": lr, "momentum": momentum, "h": [h], "noise_mass": [noise]}}]}))
    return folder


@pytest.mark.parametrize("text", ["ema:1", "ema:-0.1", "quarter", "swa:x"])
def test_from_report_refuses_with_the_parser_message(text, tmp_path):
    rep = _report(tmp_path / "rep")
    with pytest.raises(BranchScheduleError) as e:
        BranchSchedule.parse(text)
    with pytest.raises(C.ConfigError) as got:
        F.expand(F.parse(["--branch-from", "x.pt", "--branch-schedule", text, "--from-report", str(rep)]))
    assert str(got.value) == str(e.value)


def test_from_report_completes_with_a_parsable_h(tmp_path):
    rep = _report(tmp_path / "rep", h=3.7)
    for text in ("swa", "ema:0.99"):
        given, _ = F.expand(F.parse(["--branch-from", "x.pt", "--branch-schedule", text, "--from-report", str(rep)]))
        b = BranchSchedule.parse(given["branch_schedule"])
        assert not b.needs_h and str(b) == given["branch_schedule"] and math.isfinite(b.h) and b.h > 0


def test_ema_zero_from_report_has_no_equivalent_lr_below_the_lr(tmp_path):
    # γ = 0 is a legitimate decay, but the EMA is the iterate: its equivalent LR is the LR, so no H makes a lower one
    rep = _report(tmp_path / "rep")
    with pytest.raises(C.ConfigError, match="no equivalent LR below the LR"):
        F.expand(F.parse(["--branch-from", "x.pt", "--branch-schedule", "ema:0", "--from-report", str(rep)]))


# --------------------------------------------------------------------------------- each EMA decay once

def test_check_distinct():
    assert spec.check_distinct("EMA decay", (0.9, 0.99)) == [0.9, 0.99]
    with pytest.raises(ValueError, match=r"^each EMA decay at most once, got \[0.9, 0.99, 0.9\]$"):
        spec.check_distinct("EMA decay", (0.9, 0.99, 0.9))


def test_repeated_decay_refused_with_the_same_message_on_the_command_line_and_in_weight_averages():
    with pytest.raises(C.ConfigError) as e:
        F.from_cli(["smoke", "--ema-decays", "0.9,0.9"])
    assert str(e.value) == "--ema-decays: each EMA decay at most once, got [0.9, 0.9]"
    torch = pytest.importorskip("torch")
    from empirical.averaging import WeightAverages
    with pytest.raises(ValueError) as e2:
        WeightAverages(torch.nn.Linear(2, 1), [spec.EMA(0.9), spec.EMA(0.9)])
    assert str(e2.value) == "each EMA decay at most once, got [0.9, 0.9]"
