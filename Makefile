# Two entry points for a fresh machine: `make app` and `make test` (see README).
PY ?= python3
PIP = $(PY) -m pip
# CPU machines keep the CPU build of torch through a constraint; CUDA machines keep theirs.
HAS_CUDA := $(shell nvidia-smi -L >/dev/null 2>&1 && echo yes)
# Without CUDA, torch and torchvision come from PyTorch's CPU index first (PyPI's Linux wheels are
# CUDA builds: gigabytes of CUDA libraries, and a CUDA torchvision cannot be imported beside a CPU
# torch); pip leaves a pair that is already installed and matches constraints/cpu.txt alone.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
ifeq ($(HAS_CUDA),yes)
EXTRAS = gpu,onnx,postgres
CONSTRAINT =
CPU_TORCH = true
else
EXTRAS = cpu,onnx,postgres
CONSTRAINT = -c constraints/cpu.txt
CPU_TORCH = $(PIP) install -q $(CONSTRAINT) --extra-index-url $(TORCH_INDEX)
endif

.PHONY: install install-test app test test-fast lint system-test-deps

install:
	$(CPU_TORCH) torch
	$(PIP) install -q $(CONSTRAINT) -e ".[$(EXTRAS)]"

install-test:
	$(CPU_TORCH) torch torchvision
	$(PIP) install -q $(CONSTRAINT) -e ".[$(EXTRAS),test]"
	$(PY) scripts/check_torch_pair.py

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
