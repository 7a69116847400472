# privacy_vision: `make demo` runs the pipeline on the PETS 2009 video, `make test` runs the test suite.
PY := .venv/bin/python
# An 80 s clip cannot show values at a person-hour guarantee: the demo raises ε and says so in its summary.
DEMO_ARGS ?= --fps 20 --set anonymizer.window_s=20 --set aggregator.epsilon_per_presence_hour=360 \
	--set aggregator.epsilon_events_per_track_day=5 --set aggregator.daily_epsilon_cap=20

WITH ?=

.PHONY: setup demo dashboard test rqt-screenshots lock clean

# The demo's packages; WITH="ultralytics tflite postgres test" adds optional layers (requirements/*.in).
setup:
	@bash scripts/setup.sh $(WITH)

demo: setup
	$(PY) -m privacy_vision.cli run $(DEMO_ARGS) $(ARGS)

# The analyst dashboard on the demo's store (var/), read-only, after or while a demo runs.
dashboard: setup
	$(PY) -m privacy_vision.cli dashboard $(ARGS)

# ruff lint and format check (ruff.toml) first: a finding fails the test command before pytest starts.
test:
	@bash scripts/setup.sh test $(WITH)
	@start=$$(date +%s); $(PY) -m ruff check . && $(PY) -m ruff format --check . && $(PY) -m pytest $(PYTEST_ARGS); rc=$$?; echo "[test] finished in $$(( $$(date +%s) - start )) s"; exit $$rc

# The rqt screenshots in docs/img/ (docs/ros-tools.md), taken by test/test_rqt.py under Xvfb on a running graph.
rqt-screenshots:
	@bash scripts/setup.sh test
	PV_RQT_SCREENSHOTS=docs/img $(PY) -m pytest test/test_rqt.py -q -p no:cacheprovider

lock:
	rm -rf build/lock-venv && python3.11 -m venv build/lock-venv
	build/lock-venv/bin/pip install --quiet -r requirements.in
	build/lock-venv/bin/python scripts/freeze.py > requirements.lock

clean:
	rm -rf .venv build var
