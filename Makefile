# Two entry points: `make demo` (main job on the embedded default) and `make test` (whole suite).
# Both create .venv/ if missing and (re)install only when pyproject.toml or constraints.txt changed.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test bench reproduce setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[torch,data,symbolic,lightning,tensorboard,test]'
	@touch $(STAMP)

# The main job: what the theory predicts for an EMA, then a real run on the embedded digits data, then its report.
# Output lands in runs/demo/<stamp>/ (gitignored); each stage prints the path it wrote last.
DEMO := runs/demo/$(shell date +%Y%m%d-%H%M%S)
demo: $(STAMP)
	$(PY) -m theory.predict --avg ema --lr 0.05 --momentum 0.9 --decay 0.99 --steps 2400 --start 200 --out $(DEMO)/predict
	$(PY) -m empirical.run digits --out $(DEMO)/digits
	$(PY) -m compare.report $(DEMO)/digits --out $(DEMO)/report
	$(PY) -m figures.build $(DEMO)/digits --out $(DEMO)/report
	@echo "demo report: $(DEMO)/report/report.md"

reproduce: $(STAMP)
	$(PY) scripts/reproduce.py --jobs 2

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) scripts/bench_theory.py
	$(PY) scripts/bench_empirical.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
