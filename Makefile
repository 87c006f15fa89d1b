# Two commands: `make demo` trains on the built-in demo dataset,
# `make test` runs the test suite. Each creates .venv on first use.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum requirements.txt | cut -d' ' -f1)
ALIGN_STAMP := $(VENV)/.align-$(shell cksum requirements-align.txt | cut -d' ' -f1)

.PHONY: install align-deps demo demo-long test lint bench clean

install: $(STAMP)

$(STAMP): requirements.txt
	test -x $(PYTHON) || $(PY) -m venv $(VENV)
	$(PYTHON) -m pip install --disable-pip-version-check -q -r requirements.txt
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

# face alignment's optional extra: dlib as a wheel (requirements-align.txt
# says why it is not in requirements.txt); its landmark model comes from
# Debian: apt-get install libdlib-data. Without both, the real-photo tests
# skip and say so.
align-deps: $(ALIGN_STAMP)

$(ALIGN_STAMP): requirements-align.txt $(STAMP)
	$(PYTHON) -m pip install --disable-pip-version-check -q -r requirements-align.txt
	rm -f $(VENV)/.align-*
	touch $(ALIGN_STAMP)

demo: $(STAMP)
	$(PYTHON) run_shapes.py

# the demo's autoencoder trained to 4500 steps (it continues a finished
# `make demo`; about 9 more minutes on 2 cores with native bf16): measured
# in the study, z_sem then also carried the shape type with the template's
# seed, not with seed 1 (README)
demo-long: $(STAMP)
	$(PYTHON) run_shapes.py --steps 4500

test: $(STAMP)
	$(PYTHON) -m pytest -q tests

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PYTHON) bench/train_step.py --template celeba64d2c_autoenc --batch 8

clean:
	rm -rf $(VENV) .pytest_cache
