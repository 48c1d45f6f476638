# Two commands set up everything on a fresh Debian 12 machine:
#   make test   install what is missing, lint, run the whole test suite
#   make demo   install what is missing, run the main job
#   make check  lint, types and the fast tests (no database server, no GPAW)
# scripts/bootstrap.sh and docker/dev-tools.sh (compose CLI + hadolint, to check docker/
# without an engine) check before they install, so re-runs install nothing.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup test check demo lint format bench clean-demo docker-check

setup:
	@bash scripts/bootstrap.sh
	@bash docker/dev-tools.sh

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy nft_fw launchpad firetasks workflows

test: lint
	$(VENV)/bin/pytest

# The day-to-day tier: lint, types, and the tests that need neither the database server
# nor GPAW (a test in it that starts either fails, naming the marker it lacks)
check: lint
	NFT_FW_TEST_TIER=fast $(VENV)/bin/pytest -m "not integration and not gpaw" -q

# Build the images, run a small campaign in compose (embedded database image, one trainer,
# two label workers) and check it; starts and stops its own engine (scripts/docker-check.sh)
docker-check:
	@bash scripts/docker-check.sh

demo: setup
	$(VENV)/bin/nft-fw demo

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean-demo:
	-$(VENV)/bin/nft-fw db stop --data-dir .nft-fw-demo/db
	rm -rf .nft-fw-demo
