"""``torchrun --nproc_per_node=2 -m empirical.run smoke`` on CPU (gloo): rank 0 alone writes one run directory."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from common import rundir

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}", "-m", "empirical.run", *args]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)


@pytest.mark.slow
def test_two_ranks_on_cpu_write_one_run_dir(tmp_path):
    try:
        import torch.distributed as dist
        if not dist.is_available() or not dist.is_gloo_available():
            pytest.skip("torch.distributed with gloo is not available in this build")
    except ImportError:
        pytest.skip("torch.distributed is not importable")
    r = _torchrun(["smoke", "--steps", "20", "--eval-every", "10", "--swa-start", "5", "--two-point-gaps", "4"],
                  tmp_path)
    if r.returncode != 0 and ("Address already in use" in r.stderr or "rendezvous" in r.stderr.lower()
                              and "Traceback" not in r.stderr.split("rendezvous")[0]):
        pytest.skip(f"torchrun could not start its rendezvous here: {r.stderr.strip().splitlines()[-1]}")
    assert r.returncode == 0, r.stderr[-3000:]
    runs = list((tmp_path / "runs" / "empirical").iterdir())
    assert len(runs) == 1, runs  # rank 1 created nothing
    assert r.stdout.strip().splitlines()[-1].endswith(runs[0].name)
    run = rundir.load_run(runs[0])
    assert run.summary["status"] == "ok" and run.summary["steps"] == 20
    assert run.env["world_size"] == 2 and run.env["backend"] == "gloo"
    assert run.trajectory["eval/step"].tolist() == [0, 10, 20]


@pytest.mark.slow
def test_one_rank_failing_stops_all_ranks_with_a_clear_message(tmp_path):
    """Rank 1 raises at its 6th step: torchrun must end (not hang), non-zero, naming the rank and the error; rank 0's
    run directory keeps only complete files (status 'running' from its last atomic write)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}", str(Path(__file__).with_name("_rank_fails.py")),
           "smoke", "--steps", "40", "--eval-every", "2", "--out", str(tmp_path / "run")]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    if r.returncode != 0 and "Address already in use" in r.stderr:
        pytest.skip("torchrun could not bind its port")
    assert r.returncode != 0
    assert "empirical.run: rank 1 failed (RuntimeError: injected failure on rank 1); stopping all ranks" in r.stderr
    run = rundir.load_run(tmp_path / "run")            # every file present parses: nothing half-written
    assert run.summary["status"] == "running" and run.summary["steps"] < 40
