# The two commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
# torch/torchvision are pinned here (not in pyproject) to the pair that installs on these machines;
# they must be named in the same pip command as timm so the resolver keeps them.
TORCH_PIN := torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed

.PHONY: demo test test-deps results bench figures clean venv

# Compression figures (long: training on CPU). Built once, reused by `make bench` (runs/ is not committed).
PRUNED := runs/compress/mnv2-prune/manifest.json
VIT := runs/compress/vit-hybrid/variants.json

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PIN) -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/edgefg demo

test: $(STAMP) test-deps
	$(PY) -m pytest -q

# Debian packages the runtime tests drive as real processes (mosquitto, GStreamer RTSP server, chromium); fast when present
test-deps:
	bash .ci/test-deps.sh

results: $(STAMP)
	$(PY) benchmarks/results.py

$(PRUNED): | $(STAMP)
	$(PY) benchmarks/compress_figures.py prune --epochs 4

$(VIT): | $(STAMP)
	$(PY) benchmarks/compress_figures.py vit --vit-epochs 8

figures: $(STAMP) $(PRUNED) $(VIT)
	$(PY) benchmarks/compress_figures.py int8
	$(PY) benchmarks/compress_figures.py vit-int8

bench: $(STAMP) $(VIT)
	$(PY) benchmarks/run.py
	$(PY) benchmarks/pareto.py

clean:
	rm -rf $(VENV) runs .pytest_cache
