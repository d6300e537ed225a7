"""The bad-input contract of compare.report and figures.build: one line on stderr, exit 2, nothing written — for
argparse's own errors too (its default prints a multi-line usage block first) — and, under fuzzed argv, either a
result (exit 0) or that clean error, never an uncaught exception."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compare import report
from figures import build


def _code(main, argv) -> int:
    try:
        return main(argv)
    except SystemExit as e:   # argparse exits by itself (usage errors: 2; --help: 0)
        return e.code


@pytest.mark.parametrize("main, argv, fragment", [
    (report.main, ["--bogus", "x"], "unrecognized arguments: --bogus"),
    (report.main, [], "required: runs"),
    (report.main, ["--scales", "7", "r"], "invalid choice: 7"),
    (report.main, ["--floor", "zero", "r"], "invalid choice: 'zero'"),
    (build.main, ["--bogus"], "unrecognized arguments: --bogus"),
    (build.main, ["--split", "val"], "invalid choice: 'val'"),
])
def test_usage_errors_are_one_line_exit_2(main, argv, fragment, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert _code(main, argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err and "usage:" not in err, err
    assert list(tmp_path.iterdir()) == []


def test_figures_out_that_is_a_file_is_refused(tmp_path, capsys):
    f = tmp_path / "taken"
    f.write_text("keep")
    assert build.main(["--out", str(f)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a file" in err and f.read_text() == "keep"


TOKENS = ["--out", "--scales", "--floor", "--split", "--no-figures", "1", "3", "7", "model", "min-avg", "test",
          "train", "x", "", "--", "-", "NOT_A_RUN", "MISSING"]


@given(argv=st.lists(st.sampled_from(TOKENS), max_size=6), which=st.sampled_from(["report", "build"]))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_fuzzed_argv_gives_result_or_clean_error(argv, which, tmp_path_factory, capsys):
    root = tmp_path_factory.mktemp("fz")
    (root / "NOT_A_RUN").mkdir()
    argv = [str(root / t) if t in ("NOT_A_RUN", "MISSING") else t for t in argv]
    main = report.main if which == "report" else build.main
    # a fresh --out last, so a valid command (e.g. figures.build with no run: the theory-only figure) writes there
    code = _code(main, [*argv, "--out", str(root / "out")])
    err = capsys.readouterr().err
    assert code in (0, 2), (argv, err)
    if code == 2:
        assert err.count("\n") == 1 and "Traceback" not in err, (argv, err)
