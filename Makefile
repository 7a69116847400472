# privacy_vision: `make demo` runs the pipeline on the PETS 2009 video, `make test` runs the test suite.
PY := .venv/bin/python
DEMO_ARGS ?= --fps 20 --set anonymizer.window_s=20

.PHONY: setup demo test lock clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m privacy_vision.cli run $(DEMO_ARGS) $(ARGS)

# ruff lint and format check (ruff.toml) first: a finding fails the test command before pytest starts.
test: setup
	@start=$$(date +%s); $(PY) -m ruff check . && $(PY) -m ruff format --check . && $(PY) -m pytest $(PYTEST_ARGS); rc=$$?; echo "[test] finished in $$(( $$(date +%s) - start )) s"; exit $$rc

lock:
	rm -rf build/lock-venv && python3.11 -m venv build/lock-venv
	build/lock-venv/bin/pip install --quiet -r requirements.in
	build/lock-venv/bin/python scripts/freeze.py > requirements.lock

clean:
	rm -rf .venv build var
