# paylake — the two commands: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-unit stack-up stack-down stack-status lock clean

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "paylake needs Python >= 3.11"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[local,dev]'
	touch $(STAMP)

setup: $(STAMP) ## create .venv and install paylake with the locked dependencies

demo: setup ## start the local stack and run the main job through `ray job submit`
	$(BIN)/paylake demo

test: setup ## run the whole test suite against the real local stack
	$(BIN)/python -m pytest

test-unit: setup
	$(BIN)/python -m pytest tests/unit

stack-up: setup
	$(BIN)/paylake stack up

stack-down: setup
	$(BIN)/paylake stack down

stack-status: setup
	$(BIN)/paylake stack status

lock: setup ## refresh constraints.txt from the installed environment
	(echo "# Lock: the exact versions every machine resolves (pip install -c constraints.txt). Regenerate with 'make lock'."; \
	 $(BIN)/python -m pip freeze --exclude-editable | sed 's/+cpu$$//' | sort -f) > constraints.txt

clean: ## stop the stack and remove the virtualenv and local state
	-test -x $(BIN)/paylake && $(BIN)/paylake stack down
	rm -rf $(VENV) .paylake .paylake-test
