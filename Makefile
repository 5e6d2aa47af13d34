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

# The inner loop: a subset that covers every package (engine, trainer, indexes, app services, CLI) in
# at most 3 minutes on 2 cores, on the installed tree (no install, no lint). `make test` stays the
# whole suite and what CI runs. Files in the whole suite's order; the -k list drops the slowest tests
# of these files (official-architecture parity, the few-shot table, the demo model's accuracy, ...),
# which the whole suite keeps. tests/test_packaging.py checks that every file named here exists.
FAST_TESTS = \
	tests/test_app_services.py tests/test_audit_cli.py tests/test_audit_measures.py tests/test_audit_stats.py \
	tests/test_audit_trust.py \
	tests/test_bpe.py tests/test_captions.py tests/test_catalog.py tests/test_cli_user_errors.py \
	tests/test_data.py tests/test_demo_world.py tests/test_eval_cli.py tests/test_front_end_messages.py tests/test_hf_tokenizer.py \
	tests/test_heads.py tests/test_images.py tests/test_indexer.py tests/test_layering.py tests/test_loss.py tests/test_model.py \
	tests/test_packaging.py tests/test_probe.py tests/test_raw.py tests/test_retrieval.py tests/test_runtime.py \
	tests/test_scan.py tests/test_search.py tests/test_search_service.py tests/test_serving.py \
	tests/test_tokenizer.py tests/test_train.py tests/test_ui_common.py tests/test_vector_storage.py \
	tests/test_vectors.py tests/test_weights.py tests/test_zeroshot.py
FAST_SKIP = official_architectures or migrate_it_once or few_shot_table or accuracy_with_the_demo_model \
	or each_have_their_own_caption or measured_once or two_writing_processes or unnamed_colours_teach_shape \
	or (every_mode_matches_fp32 and (onnx or bf16))

test-fast:
	$(PY) -m pytest -q -m "not slow and not browser and not postgres" -k "not ($(FAST_SKIP))" $(FAST_TESTS)
