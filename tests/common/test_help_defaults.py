"""--help shows defaults one way in every CLI: "(default: X)" once at the end of an option's help,
nothing for a default of None or False; empirical.run's help shows the named preset's values and imports no torch."""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _parsers():
    from compare.report import build_parser as report
    from empirical.flags import build_parser as run
    from figures.build import build_parser as figures
    from theory.predict import build_parser as predict
    return {"theory.predict": predict(), "compare.report": report(), "figures.build": figures(),
            "empirical.run": run(), "empirical.run digits": run("digits")}


def _option_help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """One option's rendered help, whitespace collapsed (argparse wraps lines)."""
    fmt = parser._get_formatter()
    return " ".join(fmt._format_action(action).split())


def _options(parser):
    return [a for a in parser._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]


@pytest.mark.parametrize("name", ["theory.predict", "compare.report", "figures.build", "empirical.run",
                                  "empirical.run digits"])
def test_one_default_convention(name):
    parser = _parsers()[name]
    for action in _options(parser):
        text = _option_help(parser, action)
        assert text.count("(default") <= 1, text              # once, never "(default T/2) (default: None)"
        assert text.count("(default") == text.count("(default: "), text   # always with the colon
        assert "(default: None)" not in text and "(default: False)" not in text, text


@pytest.mark.parametrize("name, flag, shown", [
    ("theory.predict", "--lr", "(default: 0.05)"),
    ("theory.predict", "--start", "(default: T/2)"),            # computed default, said once
    ("theory.predict", "--avg", "(default: ema)"),
    ("compare.report", "--floor", "(default: model)"),           # showed none before
    ("compare.report", "--split", "(default: test)"),
    ("figures.build", "--out", "(default: figures/out)"),
    ("figures.build", "--split", "(default: test)"),
    ("empirical.run digits", "--steps", "(default: 2400)"),
    ("empirical.run digits", "--swa-start", "(default: 1050)"),
    ("empirical.run digits", "--ema-decays", "(default: 0.99,0.998)"),
    ("empirical.run", "--steps", "(default: digits 2400; imagenet 450450)"),
    ("empirical.run", "--momentum", "(default: 0.9)"),            # the same in both presets: shown once
    ("empirical.run", "--bf16", "(default: digits off; imagenet on)"),
])
def test_defaults_are_shown(name, flag, shown):
    parser = _parsers()[name]
    action = next(a for a in _options(parser) if flag in a.option_strings)
    assert _option_help(parser, action).endswith(shown)


@pytest.mark.parametrize("name, flag", [
    ("theory.predict", "--json"), ("theory.predict", "--spectrum"), ("compare.report", "--no-figures"),
    ("empirical.run digits", "--branch-from"), ("empirical.run digits", "--bf16"),
])
def test_none_and_off_show_no_default(name, flag):
    parser = _parsers()[name]
    action = next(a for a in _options(parser) if flag in a.option_strings)
    assert "(default" not in _option_help(parser, action)


def test_run_help_imports_no_torch_and_names_the_preset_defaults():
    code = ("import sys, io, contextlib; from empirical import run\n"
            "buf = io.StringIO()\n"
            "with contextlib.redirect_stdout(buf):\n"
            "    try: run.cli(['mnist', '--help'])\n"
            "    except SystemExit as e: code = e.code\n"
            "print(code, 'torch' in sys.modules, '(default: 3000)' in ' '.join(buf.getvalue().split()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.stdout.split() == ["0", "False", "True"], out.stderr


def test_preset_is_found_before_parsing():
    from empirical.flags import preset_named
    assert preset_named(["digits", "--help"]) == "digits"
    assert preset_named(["--lr", "0.1", "mnist", "-h"]) == "mnist"
    assert preset_named(["--dataset", "digits", "--help"]) is None     # a flag's value, not the preset
    assert preset_named(["--bf16", "imagenet", "--help"]) == "imagenet"  # a switch takes no value
    assert preset_named(["--help"]) is None
