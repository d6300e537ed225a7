"""The README is a newcomer's five-minute entry point and the docs hold the rest: the quick start is exactly two
commands, the README keeps its short structure, every `python -m ...` command shown in the README,
docs/walkthrough.md or docs/tools.md is accepted by that command's own parser (so a renamed or removed flag fails
here, not in a user's terminal), the walkthrough's outputs are the ones scripts/walkthrough.py pastes, relative
links resolve, and the terms the docs use are defined."""
from __future__ import annotations

import importlib.util
import re
import shlex
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
WALKTHROUGH = (ROOT / "docs" / "walkthrough.md").read_text()
DOCS = {"README.md": README, "docs/walkthrough.md": WALKTHROUGH, "docs/tools.md": (ROOT / "docs" / "tools.md").read_text()}
TOOLS = {"theory.predict", "empirical.run", "empirical.posthoc", "compare.report", "figures.build"}

spec = importlib.util.spec_from_file_location("walkthrough", ROOT / "scripts" / "walkthrough.py")
walkthrough = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = walkthrough          # before running it: its dataclass looks its module up
spec.loader.exec_module(walkthrough)


def _section(text: str, heading: str) -> str:
    return text.split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]


def _commands(text: str) -> list[list[str]]:
    out = []
    for block in re.findall(r"```(?:bash|console)\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = line.removeprefix("$ ").split("  #")[0].strip()
            m = re.match(r"^(?:\.venv/bin/)?python -m (" + "|".join(map(re.escape, TOOLS)) + r")\b(.*)$", line)
            if m and "..." not in line and "…" not in line:
                out.append([m.group(1), *shlex.split(m.group(2))])
    return out


def test_quick_start_is_exactly_two_commands():
    block = re.search(r"```bash\n(.*?)```", _section(README, "## Quick start"), flags=re.S).group(1)
    cmds = [ln.split("#")[0].strip() for ln in block.splitlines() if ln.split("#")[0].strip()]
    assert cmds == ["make demo", "make test"]


def test_readme_is_short_and_keeps_its_sections():
    assert len(README.splitlines()) <= 250
    heads = re.findall(r"^## (.+)$", README, flags=re.M)
    assert heads == ["Quick start", "A taste of each tool", "Use it in your own training loop", "Results",
                     "Where things are", "Documentation"]
    results = _section(README, "## Results").strip().splitlines()
    assert len(results) <= 15 and "docs/results.md" in "\n".join(results)
    # the console scripts are named once, beside the python -m forms the commands use
    assert all(name in README for name in ("avglr-predict", "avglr-run", "avglr-report", "avglr-figures",
                                           "avglr-posthoc"))


@pytest.mark.parametrize("name", list(DOCS))
def test_no_dated_history_or_placeholders(name):
    text = DOCS[name]
    assert not re.search(r"\b20\d\d-\d\d-\d\d\b", text), "a date: say which command and machine kind instead"
    assert not re.search(r"\b(this|an? earlier|a later|the previous|evening) session\b", text, flags=re.I)
    assert "@@" not in text, "a placeholder was left"


def test_each_tool_has_a_taste_with_real_output_in_the_readme():
    taste = _section(README, "## A taste of each tool")
    blocks = re.findall(r"```console\n(.*?)```", taste, flags=re.S)
    assert {m for b in blocks for m in TOOLS if f"-m {m} " in b} == TOOLS
    for block in blocks:   # the command and what it printed
        lines = [ln for ln in block.splitlines() if ln.strip()]
        assert sum(ln.startswith("$ ") for ln in lines) < len(lines), block


def test_the_walkthrough_goes_from_question_to_answer_with_outputs():
    for step in ("theory.predict", "empirical.run", "compare.report", "--from-report", "--branch-from",
                 "empirical.posthoc", "figures.build"):
        assert step in WALKTHROUGH
    blocks = re.findall(r"```console\n(.*?)```", WALKTHROUGH, flags=re.S)
    marked = walkthrough.blocks(ROOT / "docs" / "walkthrough.md")
    assert len(marked) == len(blocks) >= 8, "every console block is pasted by scripts/walkthrough.py"
    for block in blocks:
        lines = [ln for ln in block.splitlines() if ln.strip()]
        assert lines[0].startswith("$ ") and len(lines) > 1, block


def test_readme_excerpts_come_from_the_walkthrough_run():
    walk = {b.command for b in walkthrough.blocks(ROOT / "docs" / "walkthrough.md")}
    excerpts = walkthrough.blocks(ROOT / "README.md")
    assert len(excerpts) >= 5
    assert all(b.command in walk for b in excerpts)


def test_walkthrough_trim():
    lines = [f"l{i}" for i in range(10)]
    assert walkthrough.trim(lines, "") == lines
    assert walkthrough.trim(lines, ":2; -1:") == ["l0", "l1", "…", "l9"]
    assert walkthrough.trim(lines, "/l[35]/") == ["…", "l3", "…", "l5", "…"]
    assert walkthrough.trim(lines, ":1; /l8/:") == ["l0", "…", "l8", "l9"]
    with pytest.raises(ValueError, match="matches no line"):
        walkthrough.trim(lines, "/nothing/")


@pytest.mark.parametrize("term", ["bank", "dip after use", "noise mass", "floor", "[V]", "D(τ)", "equivalent LR",
                                  "BN artefact", "branch", "post-hoc average", "gain"])
def test_terms_are_defined_in_one_place(term):
    terms = (ROOT / "docs" / "theory.md").read_text().split("\n### Terms\n", 1)[1].split("\n### ", 1)[0]
    assert re.search(r"^\| [^|]*" + re.escape(term), terms, flags=re.M | re.I), term


@pytest.mark.parametrize("name", list(DOCS))
def test_relative_links_resolve(name):
    base = (ROOT / name).parent
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", DOCS[name]):
        assert (base / target).exists(), f"{name}: link to {target}"


def test_every_command_shown_is_accepted_by_its_parser():
    from compare import report
    from empirical import flags, posthoc
    from figures import build
    from theory import predict

    cmds = [c for text in DOCS.values() for c in _commands(text)]
    assert len(cmds) >= 20
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
    assert seen == TOOLS
