# semsim: `make report` and `make test` each build .venv first (idempotent, offline once installed).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMPS := .stamps
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export PYTHONUNBUFFERED := 1

.PHONY: setup report test lab label bench clean-check
setup: $(STAMPS)/debian $(STAMPS)/venv

$(STAMPS)/debian:
	@mkdir -p $(STAMPS)
	@missing=""; \
	  [ -d /usr/share/datasets/fashion-mnist ] || missing="$$missing dataset-fashion-mnist"; \
	  [ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	  if [ -n "$$missing" ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  fi
	@touch $@

$(STAMPS)/venv: settings.ini setup.py
	@mkdir -p $(STAMPS)
	[ -x $(PY) ] || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip<26.2" setuptools wheel
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e ".[dev]" --config-settings editable_mode=compat
	@touch $@

report: setup
	$(VENV)/bin/semsim report --dataset fashion_mnist

test: setup
	bash .ci/checks.sh

lab: setup
	$(VENV)/bin/jupyter lab --ip 127.0.0.1 --no-browser --allow-root --ServerApp.root_dir=nbs

RUN ?= runs/fashion_mnist
label: setup
	@[ -n "$(ANNOTATOR)" ] || { echo "usage: make label ANNOTATOR=yourname [RUN=runs/NAME]"; exit 2; }
	$(VENV)/bin/semsim label --run $(RUN) --annotator $(ANNOTATOR)

bench: setup
	$(PY) benchmarks/attack_throughput.py
	$(PY) benchmarks/metrics_throughput.py
