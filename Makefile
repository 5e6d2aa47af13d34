# Two entry points for a fresh machine: `make app` and `make test` (see README).
PY ?= python3
PIP = $(PY) -m pip
# CPU machines keep the CPU build of torch through a constraint; CUDA machines keep theirs.
HAS_CUDA := $(shell nvidia-smi -L >/dev/null 2>&1 && echo yes)
ifeq ($(HAS_CUDA),yes)
EXTRAS = gpu,onnx,postgres
CONSTRAINT =
else
EXTRAS = cpu,onnx,postgres
CONSTRAINT = -c constraints/cpu.txt
endif

.PHONY: install install-test app test lint system-test-deps

install:
	$(PIP) install -q $(CONSTRAINT) -e ".[$(EXTRAS)]"

install-test:
	$(PIP) install -q $(CONSTRAINT) -e ".[$(EXTRAS),test]"

app: install
	cliplab app

system-test-deps:
	bash scripts/system-test-deps.sh

lint:
	$(PY) -m ruff check .
	$(PY) scripts/check_layers.py
	$(PY) scripts/check_imports.py

test: install-test system-test-deps lint
	bash scripts/run-tests.sh
