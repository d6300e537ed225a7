"""Plumbing shared by every package (theory, empirical, compare, figures): the run-directory format and atomic
writes (``common.rundir``), the one-line command-line contract and pipe handling (``common.cli``) and the figure
style (``common.style``). It imports no torch and none of the project's other packages."""
