# gatewayd — developer and operator entry points. Run as root for netns tests and the demo.
PYTHON ?= python3
PYTEST_ARGS ?=

.PHONY: help deps install lint typecheck test test-unit test-netns bench demo clean

help:
	@echo "make deps      install Debian packages (strongSwan, iperf3, ...) and Python deps"
	@echo "make demo      set everything up and show a live encrypted tunnel (root)"
	@echo "make test      run the whole test suite (root for namespace/interop tests)"
	@echo "make lint      ruff"
	@echo "make bench     benchmarks: ESP and IKE micro, data path vs strongSwan/wireguard-go (root)"

deps:
	bash tools/install-deps.sh
	$(PYTHON) -m pip install --quiet -e '.[test]'

install:
	$(PYTHON) -m pip install --quiet -e '.[test]'

lint:
	$(PYTHON) -m ruff check gatewayd ike esp tests bench tools

typecheck:
	$(PYTHON) -m mypy gatewayd ike esp

test: lint
	$(PYTHON) -m pytest -n 2 $(PYTEST_ARGS)

test-unit:
	$(PYTHON) -m pytest -n 2 -m "not netns" $(PYTEST_ARGS)

test-netns:
	$(PYTHON) -m pytest -m netns $(PYTEST_ARGS)

bench:
	$(PYTHON) -m bench

demo:
	bash tools/demo.sh

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache .mypy_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
