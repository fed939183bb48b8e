# The two commands of the README; both work on a fresh machine with Python 3.11+.
.PHONY: run test lint lock audit bench-openai bench-anthropic

run:  ## set up a virtualenv, migrate, serve both sites on http://127.0.0.1:8000
	sh scripts/run.sh

test:  ## set up a virtualenv with the test tools, run the whole suite (ARGS='-k health' for pytest)
	sh scripts/test.sh $(ARGS)

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

lock:  ## re-pin every runtime and dev dependency, with hashes, after a change to pyproject.toml
	.venv/bin/pip-compile --quiet --extra dev --generate-hashes --no-emit-index-url \
	    --no-emit-find-links --allow-unsafe --strip-extras -o requirements.lock pyproject.toml

audit:  ## pip-audit over requirements.lock; offline against security/osv/ when its service is unreachable
	sh scripts/audit.sh
