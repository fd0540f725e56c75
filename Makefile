# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# x86_64: 2.14.1 + 0.29.1 (a CUDA build, about 5.5 GB, that runs on the CPU; the CPU-only 2.13.0 file has no
# torchvision that loads beside it); aarch64: 2.9.1 + 0.24.1 (CPU builds). GPU users: see docs/models.md.
ifeq ($(shell uname -m),aarch64)
TORCH := "torch==2.9.1" "torchvision==0.24.1"
else
TORCH := "torch==2.14.1" "torchvision==0.29.1"
endif

.PHONY: demo test install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch with a matching torchvision (Qwen2.5-VL's and SmolVLM's processors need torchvision), pinned to
	# the releases that lie on this project's machines' disk, so pip never downloads a multi-GB build here.
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[dev,train]"
	touch $(STAMP)

install: $(STAMP)

# The main job on the embedded default, the whole story (about 3 minutes on two cores): the probe of tiny against
# tiny-cdrl, CA-TTS against the baselines with either sampler, runs/demo/report.html and the headline numbers.
demo: $(STAMP)
	rm -rf runs/demo
	$(VENV)/bin/catts demo --out runs/demo

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache
