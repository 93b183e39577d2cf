# Everything runs inside .venv, created here. torch==2.13.0 is installed first so that pip takes the
# local CPU build; on a GPU machine install the CUDA torch you want into .venv before `make install`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Optional extras to install, e.g. `make test EXTRAS=dev,ray` (the Ray backend, docs/scaling.md; CI does this).
EXTRAS ?= dev
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

.PHONY: install run demo test test-slow lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"
	# Model upscalers. spandrel's metadata asks for torchvision, but PyPI's torchvision is a CUDA
	# build that cannot load next to the CPU torch and then breaks transformers' image processors; the upscaler
	# architectures never use it (engine/render/upscalers.py), so spandrel is installed without its dependencies.
	$(BIN)/pip install -q --no-deps spandrel==0.4.2
	touch $(STAMP)

install: $(STAMP)

# The main job on the embedded defaults: SQLite file, in-process engine, tiny model when none is configured.
run: $(STAMP)
	$(BIN)/sdbot run

# Offline demo that needs no Discord token: render one image with the tiny model.
demo: $(STAMP)
	$(BIN)/sdbot render "a photo of a cat, (masterpiece:1.2)" --seed 42 --out out/demo.png

test: $(STAMP)
	$(BIN)/python -m pytest

# Format check, lint and type check (ruff and mypy, configured in pyproject.toml); CI runs it before the tests.
lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy bot engine

test-slow: $(STAMP)
	$(BIN)/python -m pytest --slow

bench: $(STAMP)
	$(BIN)/python benchmarks/engine_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
