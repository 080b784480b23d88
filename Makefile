# Two commands do all the set-up (see README):
#   make demo   create/refresh .venv, then run the DRSA demo on synthetic data (report.html)
#   make test   create/refresh .venv, then lint and run the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONSTRAINTS := requirements/constraints.txt
ZENNIT1 := $(VENV)/zennit-1.0
DEMO_OUT ?= demo-out
export OMP_NUM_THREADS ?= 2

.PHONY: demo test lint format lock clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

# Reinstall whenever the project metadata or the pins change.
$(VENV)/.installed: $(BIN)/activate pyproject.toml $(CONSTRAINTS)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e '.[dev]'
	# Zennit 1.0 declares Python >= 3.11.11 but runs here; keep it beside 0.5.1 for the version matrix.
	rm -rf $(ZENNIT1)
	$(BIN)/python -m pip install --quiet --no-deps --ignore-requires-python --target $(ZENNIT1) zennit==1.0.0
	touch $@

demo: $(VENV)/.installed
	$(BIN)/zennit-drsa demo --out $(DEMO_OUT)

test: $(VENV)/.installed lint
	$(BIN)/python -m pytest
	# Version-sensitive tests again against Zennit 1.0.
	PYTHONPATH=$(ZENNIT1) $(BIN)/python -m pytest -m zennit -p no:cacheprovider

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	# The layers (pyproject.toml [tool.importlinter]): application → plugin core | model → atomic_io.
	$(BIN)/lint-imports --no-cache

format: $(VENV)/.installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

lock: $(VENV)/.installed
	{ grep '^#' $(CONSTRAINTS); $(BIN)/python -m pip freeze --exclude-editable; } > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
