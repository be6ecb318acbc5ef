# The two commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
# torch/torchvision are pinned here (not in pyproject) to the pair that installs on these machines;
# they must be named in the same pip command as timm so the resolver keeps them.
TORCH_PIN := torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed

.PHONY: demo test test-deps lint results bench figures clean venv test-arm64

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

test: $(STAMP) test-deps lint
	$(PY) -m pytest -q

# ruff (lint + import order; [tool.ruff] in pyproject.toml) and mypy on the package against
# .ci/mypy-baseline.txt: a new finding fails, and so does a fixed one still listed (the baseline only shrinks)
lint: $(STAMP)
	$(VENV)/bin/ruff check
	$(PY) .ci/typecheck.py

# Debian packages the runtime tests drive as real processes (mosquitto, GStreamer RTSP server, chromium); fast when present
test-deps:
	bash .ci/test-deps.sh

# The Raspberry Pi path on ARM: a cached Debian bookworm arm64 root under qemu-user (.ci/arm64.py, as root),
# edgefg pip-installed in it as on a device, an rpi5 INT8 bundle validated and run there (docs/arm64.md)
test-arm64: $(STAMP) test-deps
	$(PY) -m pytest -q tests/test_arm64.py

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

# The documentation site (mkdocs.yml, pages in docs/) into site/. It needs only the packages of the docs extra
# (read from pyproject.toml), not edgefg itself or the dev install, so a fresh machine gets just those.
# --strict: a broken link or anchor, or a page left out of the nav, fails the build.
DOCS_STAMP := $(VENV)/.docs-installed
DOCS_DEPS = $(PY) -c 'import tomllib; print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["docs"]))'
.PHONY: docs

$(DOCS_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $$($(DOCS_DEPS))
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) runs .pytest_cache
