# The two commands of the README. Both set up .venv first.
.PHONY: demo test lint bench

demo:
	@scripts/bootstrap.sh
	@.venv/bin/cpv demo

test:
	@scripts/bootstrap.sh test
	@.venv/bin/ruff check cp_manage tests bench
	@.venv/bin/mypy
	@.venv/bin/python -m pytest -q

bench:
	@scripts/bootstrap.sh test
	@.venv/bin/python bench/bench.py
