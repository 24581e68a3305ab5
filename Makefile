# The two commands a user needs: `make demo` and `make test`. Both set up what they need.
SHELL := /bin/bash
ENV := source scripts/env.sh &&

.PHONY: setup test lint pytest demo bench clean
setup:
	@scripts/setup.sh

lint: setup
	@$(ENV) ruff check . && ruff format --check .

test: setup
	@$(ENV) ruff check . && ruff format --check . && python -m pytest $(PYTEST_ARGS)

demo: setup
	@$(ENV) scripts/demo.sh $(ARGS)

bench: setup
	@$(ENV) scripts/bench.sh

clean:
	rm -rf .venv .build ros2_ws/build ros2_ws/install ros2_ws/log
