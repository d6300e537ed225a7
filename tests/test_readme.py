"""The README is the newcomer's entry point (issue: "a README a researcher can follow from question to answer"):
its quick start is exactly two commands, every `python -m ...` command it shows is accepted by that command's own
parser (so a renamed or removed flag fails here, not in a user's terminal), and the terms it uses are defined."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _blocks() -> list[str]:
    return re.findall(r"```(?:bash|console)\n(.*?)```", README, flags=re.S)


def _commands() -> list[list[str]]:
    out = []
    for block in _blocks():
        for line in block.splitlines():
            line = line.removeprefix("$ ").split("  #")[0].strip()
            m = re.match(r"^(?:\.venv/bin/)?python -m (theory\.predict|empirical\.run|empirical\.posthoc|"
                         r"compare\.report|figures\.build)\b(.*)$", line)
            if m and "..." not in line and "…" not in line:
                out.append([m.group(1), *shlex.split(m.group(2))])
    return out


def test_quick_start_is_exactly_two_commands():
    quick = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", quick, flags=re.S).group(1)
    cmds = [ln.split("#")[0].strip() for ln in block.splitlines() if ln.split("#")[0].strip()]
    assert cmds == ["make demo", "make test"]


def test_the_walkthrough_comes_right_after_the_quick_start_and_shows_outputs():
    heads = re.findall(r"^## (.+)$", README, flags=re.M)
    assert heads[0] == "Quick start" and heads[1].startswith("From question to answer")
    walk = README.split("## From question to answer", 1)[1].split("\n## ", 1)[0]
    assert "@@" not in README, "a placeholder was left in the README"
    for step in ("theory.predict", "empirical.run", "compare.report", "--from-report", "--branch-from",
                 "empirical.posthoc"):
        assert step in walk
    # each console block holds the command and what it printed (more lines than commands)
    for block in re.findall(r"```console\n(.*?)```", walk, flags=re.S):
        lines = [ln for ln in block.splitlines() if ln.strip()]
        assert sum(ln.startswith("$ ") for ln in lines) < len(lines)


@pytest.mark.parametrize("term", ["bank", "dip after use", "noise mass", "floor", "[V]", "D(τ)", "equivalent LR",
                                  "BN artefact", "branch", "post-hoc average"])
def test_glossary_defines_the_terms(term):
    glossary = README.split("## Glossary", 1)[1].split("\n## ", 1)[0]
    assert re.search(r"^\| [^|]*" + re.escape(term), glossary, flags=re.M | re.I), term


def test_every_command_shown_is_accepted_by_its_parser():
    from compare import report
    from empirical import flags, posthoc
    from figures import build
    from theory import predict

    cmds = _commands()
    assert len(cmds) >= 15
    seen = set()
    for mod, *argv in cmds:
        seen.add(mod)
        if "--help" in argv:                      # prints the help and exits 0: not a parse of these flags
            continue
        if mod == "empirical.run":
            flags.parse(argv)                    # flags and values only: no data, no checkpoint is opened
        else:
            parser = {"theory.predict": predict.build_parser, "compare.report": report.build_parser,
                      "figures.build": build.build_parser, "empirical.posthoc": posthoc._parser}[mod]()
            parser.parse_args(argv)
    assert seen == {"theory.predict", "empirical.run", "empirical.posthoc", "compare.report", "figures.build"}
