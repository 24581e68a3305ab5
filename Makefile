# The two commands a user needs: `make demo` and `make test`. Both set up what they need.
SHELL := /bin/bash
ENV := source scripts/env.sh &&

.PHONY: setup test lint pytest demo bench clean pretrained
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

# the shipped CLAMP checkpoint (models/clamp_cpu) from nothing: scripted demonstrations of the non-demo tasks,
# converted with the CLAMP views, pretrained, model card written (training/configs/pretrain_cpu.yaml; resumable)
pretrained: setup
	@$(ENV) nice -n 15 python -m clamp_training pretrain --config training/configs/pretrain_cpu.yaml \
		--out .build/pretrained/clamp_cpu --ship models/clamp_cpu $(ARGS)

clean:
	rm -rf .venv .build ros2_ws/build ros2_ws/install ros2_ws/log
