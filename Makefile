# Two commands on a fresh clone: `make test` and `make demo`. Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# torch is pinned to 2.13.0 (constraints.txt). On a Linux machine without a GPU, PyPI's build brings GBs
# of CUDA libraries; `make install TORCH_INDEX=https://download.pytorch.org/whl/cpu` takes the CPU
# build (2.13.0+cpu satisfies the pin) from PyTorch's own index instead.
TORCH_INDEX ?=
PIP_TORCH := $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX),)

# Telemetry off for evidently and Great Expectations, everywhere we run them.
export DO_NOT_TRACK := 1
export GX_ANALYTICS_ENABLED := false

.PHONY: install test lint typecheck pytest demo clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	@echo "installing skewguard and its dev tools into $(VENV) (log: $(VENV)/install.log)"
	@$(BIN)/pip install --upgrade "pip>=24" > $(VENV)/install.log 2>&1 \
	  && $(BIN)/pip install $(PIP_TORCH) -c constraints.txt -e ".[dev]" >> $(VENV)/install.log 2>&1 \
	  || { tail -40 $(VENV)/install.log; echo "install failed: see $(VENV)/install.log"; exit 1; }
	touch $(STAMP)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

pytest: install
	$(BIN)/pytest -q

test: lint typecheck pytest

demo: install
	$(BIN)/skewguard demo

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache skewguard-demo
