"""DataLoader workers: a preset's ``workers`` (cifar 4, imagenet 8) is a maximum, lowered to the CPUs this process
may use less one (the training process's own), shared among torchrun's local ranks; --workers N is taken as given.
Checked on the resolved configuration, without a dataset."""
from __future__ import annotations

import os
from dataclasses import replace

import pytest

from common import rundir
from empirical import presets, run, validation


@pytest.mark.parametrize("cap, cpus, ranks, want", [
    (8, 2, 1, 1),       # the 2-core machine: one worker beside the training process
    (8, 1, 1, 0),       # one CPU: load in the training process
    (8, 16, 1, 8),      # enough CPUs: the preset's value
    (4, 64, 1, 4),
    (8, 16, 8, 1),      # 8 ranks on 16 CPUs: 2 each, one of them for training
    (8, 16, 2, 7),
    (8, 4, 8, 0),       # fewer CPUs than ranks
    (0, 64, 1, 0),
])
def test_auto_workers(cap, cpus, ranks, want):
    assert run.auto_workers(cap, cpus, ranks) == want


def test_available_cpus_uses_the_affinity_mask(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert run.available_cpus() == 2
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)   # macOS, Windows: no affinity mask
    assert run.available_cpus() == 64


@pytest.fixture
def two_cpus(monkeypatch):
    monkeypatch.setattr(run, "available_cpus", lambda: 2)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)


@pytest.mark.parametrize("preset, cap", [("imagenet", 8), ("cifar10", 4)])
def test_preset_workers_lowered_to_the_cpus(preset, cap, tmp_path, two_cpus):
    assert presets.PRESETS[preset].workers == cap
    cfg, state, kind, _, notes = run.resolve([preset, "--data-dir", str(tmp_path)])
    assert (cfg.workers, state, kind) == (1, None, "new")
    (note,) = [n for n in notes if "--workers" in n]
    assert note.startswith(f"--workers 1 instead of {cap}: 2 CPUs available") and "--workers N" in note


def test_given_workers_are_kept(tmp_path, two_cpus):
    cfg, *_, notes = run.resolve(["imagenet", "--data-dir", str(tmp_path), "--workers", "8"])
    assert cfg.workers == 8 and not [n for n in notes if "--workers" in n]
    cfg, *_ = run.resolve(["imagenet", "--data-dir", str(tmp_path), "--workers", "0"])
    assert cfg.workers == 0


def test_presets_without_workers_unchanged(two_cpus):
    cfg, *_, notes = run.resolve(["digits"])
    assert cfg == presets.PRESETS["digits"] and notes == []


def test_local_ranks_share_the_cpus(tmp_path, monkeypatch):
    monkeypatch.setattr(run, "available_cpus", lambda: 16)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    cfg, *_, notes = run.resolve(["imagenet", "--data-dir", str(tmp_path)])
    assert cfg.workers == 3 and any("shared by 4 ranks" in n for n in notes)


def test_resume_lowers_a_saved_value(tmp_path, two_cpus):
    """A run started on a bigger machine (8 workers recorded) resumes here with what this machine allows."""
    saved = validation.validate(replace(presets.PRESETS["imagenet"], data_dir=str(tmp_path), workers=8,
                                    out=str(tmp_path / "r")))
    rundir.new_run_dir("empirical", "x", out=saved.out)
    rundir.write_config(tmp_path / "r", "empirical", saved.to_dict())
    cfg, _, kind, _, _ = run.resolve(["--resume", "--out", str(tmp_path / "r")])
    assert kind == "resume" and cfg.workers == 1
    cfg, *_ = run.resolve(["--resume", "--out", str(tmp_path / "r"), "--workers", "6"])
    assert cfg.workers == 6
