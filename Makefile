# mineru-cli: install, demo, test. Everything lives in a local virtual environment (.venv).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip

.PHONY: install install-test demo test bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# An editable install does not byte-compile the package the way a wheel install does; where
# PYTHONDONTWRITEBYTECODE is set, every start would compile src/ again (about 0.1 s).
install: $(PY)
	$(PIP) install --quiet -e .
	$(PY) -m compileall -q src

install-test: $(PY)
	$(PIP) install --quiet -e ".[test]"
	$(PY) -m compileall -q src

# The main job on the bundled examples: converts examples/ into demo-out/ and writes a report.
demo: install
	$(VENV)/bin/mineru-cli convert examples -o demo-out --report demo-out/report.json

# The whole test suite (real MinerU, real worker processes, S3 on a loopback moto server).
test: install-test
	$(PY) -m pytest -q

bench: install-test
	$(PY) benchmarks/bench.py

clean:
	rm -rf demo-out .pytest_cache
