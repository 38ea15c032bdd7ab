# `make run` starts the whole system; `make test` runs every check. Both set up .venv first.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
FRONTENDS := $(wildcard codecollab/frontend/package.json scheduler/frontend/package.json)

.PHONY: run test setup assets lint format clean

# The port check runs before the asset build, so a second `make run` stops at once and says
# which port is taken. The launcher (launcher/) supervises the Procfile; see `python -m launcher -h`.
run: setup
	@$(BIN)/python -m launcher --check
	@$(MAKE) --no-print-directory assets
	@$(BIN)/python -m launcher

test: setup assets
	$(BIN)/ruff check .
	$(BIN)/pytest $(PYTEST_ARGS)

setup: $(VENV)/.installed

# The stamp is rebuilt whenever the requirements or the package metadata change.
$(VENV)/.installed: requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is required; found " + sys.version.split()[0])'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	@touch $@

# Builds each frontend that has a package.json; needs Node 20 or newer.
assets:
	@for pkg in $(FRONTENDS); do \
		dir=$$(dirname $$pkg); \
		command -v npm >/dev/null || { echo "npm not found: install Node.js 20 or newer to build $$dir"; exit 1; }; \
		if [ ! -d $$dir/node_modules ] || [ $$dir/package-lock.json -nt $$dir/node_modules/.package-lock.json ]; then \
			(cd $$dir && npm ci --no-audit --no-fund) || exit 1; \
		fi; \
		(cd $$dir && npm run --silent build) || exit 1; \
	done

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) var .pytest_cache
