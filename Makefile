# The two commands of the README; both work on a fresh machine with Python 3.11+.
.PHONY: run test lint bench-openai bench-anthropic

run:  ## set up a virtualenv, migrate, serve both sites on http://127.0.0.1:8000
	sh scripts/run.sh

test:  ## set up a virtualenv with the test tools, run the whole suite (ARGS='-k health' for pytest)
	sh scripts/test.sh $(ARGS)

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check .
