"""The command-line contract shared by theory.predict, compare.report and figures.build (no torch here).

Bad input gets ONE line on stderr naming the problem, exit status 2 and nothing written. argparse's own
``error`` prints a usage block of several lines first; ``OneLineParser`` keeps only the message.
"""
from __future__ import annotations

import argparse


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")
