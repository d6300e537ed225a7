# Two entry points: `make demo` (main job on the embedded default) and `make test` (whole suite).
# Both create .venv/ if missing and (re)install only when pyproject.toml or constraints.txt changed.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test bench setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[empirical,test]'
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m theory.predict --avg ema --lr 0.05 --decay 0.995 --steps 4000 --start 2000

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) scripts/bench_theory.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
