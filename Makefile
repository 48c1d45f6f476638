# Two commands set up everything on a fresh Debian 12 machine:
#   make test   install what is missing, lint, run the test suite (all but the SLURM tier:
#               make cluster-check, which .ci/run also runs)
#   make demo   install what is missing, run the main job
#   make check  lint, types and the fast tests (no database server, no GPAW)
# `make setup` installs what the demo needs (scripts/bootstrap.sh run); `make setup-dev`
# adds the test tools (bootstrap.sh dev: pytest, ruff, mypy, a headless Chromium) and
# docker/dev-tools.sh (compose CLI + hadolint, to check docker/ without an engine). Both
# check before they install, so re-runs install nothing.
VENV ?= .venv
PY := $(VENV)/bin/python
# pytest-xdist processes: the integration tests mostly wait (worker processes, servers,
# polls), so three share two cores well; tests/conftest.py keeps a file's tests together
# where they share a module-scoped campaign
TEST_PROCESSES ?= 3

.PHONY: setup setup-dev test check coverage demo lint format bench clean-demo docker-check cluster-check docs

setup:
	@bash scripts/bootstrap.sh run

setup-dev:
	@bash scripts/bootstrap.sh dev
	@bash docker/dev-tools.sh

lint: setup-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy nft_fw launchpad firetasks workflows

# everything but the tests under a real SLURM (make cluster-check, which .ci/run also runs)
test: lint
	$(VENV)/bin/pytest -m "not slurm" -n $(TEST_PROCESSES)

# The day-to-day tier: lint, types, and the tests that need neither the database server
# nor GPAW (a test in it that starts either fails, naming the marker it lacks)
check: lint
	NFT_FW_TEST_TIER=fast $(VENV)/bin/pytest -m "not integration and not gpaw and not slurm" -q -n 2

# Line coverage of the four packages by the make test suite, worker and CLI processes
# included (coverage's patch = subprocess; settings in pyproject.toml; pytest-cov combines
# the processes' data files): prints the table
coverage: setup-dev
	rm -rf .coverage .coverage.*
	$(VENV)/bin/pytest -m "not slurm" -n $(TEST_PROCESSES) -q --cov --cov-report=
	$(VENV)/bin/coverage report

# Build the images, run a small campaign in compose (embedded database image, one trainer,
# two label workers) and check it; starts and stops its own engine (scripts/docker-check.sh)
docker-check:
	@bash scripts/docker-check.sh

# The workers under a real SLURM: one-node clusters from Debian's slurm-wlm and munge,
# installed if missing, started and stopped by each test (scripts/cluster-check.sh)
cluster-check:
	@bash scripts/cluster-check.sh

demo: setup
	$(VENV)/bin/nft-fw demo

# Regenerate the campaign-file reference from the models in nft_fw/spec/campaign.py
# (tests/test_docs.py fails while docs/campaign-file.md differs from it)
docs: setup
	$(PY) -m nft_fw.spec.reference --write docs/campaign-file.md

format: setup-dev
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean-demo:
	-$(VENV)/bin/nft-fw db stop --data-dir .nft-fw-demo/db
	rm -rf .nft-fw-demo
