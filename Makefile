# The two commands a newcomer needs:  make run   and   make test
# Both create or refresh .venv from requirements.lock when needed (a no-op
# when it is up to date). Needs only Python 3.10 with venv and pip.

PYTHON ?= $(shell command -v python3.10 2>/dev/null || ls -d $(HOME)/.pyenv/versions/3.10*/bin/python 2>/dev/null | tail -n 1)
VENV   := .venv
PY     := $(VENV)/bin/python
UV_VERSION := 0.13.9
STAMP  := $(VENV)/.installed
ARGS   ?=
PYTEST_ARGS ?=
# What `make test` / `make unit` run: a folder or file to run a subset
# (a tests/... path in PYTEST_ARGS is taken as that subset too).
TESTS ?= tests
TEST_PATHS = $(if $(filter tests/% tests,$(PYTEST_ARGS)),,$(TESTS))
# Two workers (pytest-xdist), one test file each at a time: a file's module
# fixtures (a Flink cluster, a MariaDB) stay in one process, the session's
# shared worlds are built once for both (tests/world.py). Files start in
# tests/helpers.py HEAVY_FIRST's order, not xdist's (most tests first).
# XDIST= runs in one process.
XDIST ?= -n 2 --dist loadfile --no-loadscope-reorder

SERVE_ARGS ?=
# The problem `make serve` serves (models/<problem>/; make run takes
# ARGS='--problem NAME').
PROBLEM ?= taxi

# Airflow lives in its own venv: its pins differ from requirements.lock in two
# packages (see requirements-airflow.in), so `make run` never pays for it.
AIRFLOW_VENV  := .venv-airflow
AIRFLOW_PY    := $(AIRFLOW_VENV)/bin/python
AIRFLOW_STAMP := $(AIRFLOW_VENV)/.installed

.PHONY: venv run score serve ui test unit lock clean help airflow-venv airflow-test airflow-lock vertex replay ct release \
        flink-fetch flink-up flink-down flink-run test-setup

help:
	@echo "make run    - run the pipeline on the bundled data (ARGS='--train-steps 200 ...'; --problem penguin)"
	@echo "make score  - score a span with the served model: BulkInferrer, PredictionLogs + CSV (ARGS='--span 3 ...')"
	@echo "make vertex - compile for Vertex AI Pipelines (ARGS='--project P [--submit]')"
	@echo "make serve  - serve the pushed models (PROBLEM=penguin for another) over TF Serving's REST (8501) and gRPC (8500) APIs"
	@echo "make ui     - a read-only web UI over ML Metadata on http://127.0.0.1:8080/ (ARGS='--replay outputs/taxi/replay')"
	@echo "make ct     - continuous training: decide whether to run (and why), run if so (ARGS='--force ...')"
	@echo "make release - gate the working tree (changed code's tests, a sample run, an experiment against production) and release it for CT"
	@echo "make replay - replay the 16 spans in time order through the CT controller (ARGS='--spans 1-4 ...')"
	@echo "make test   - run the test suite (~19 min on 2 cores; TESTS=tests/models for a subset, PYTEST_ARGS='-k ...')"
	@echo "make unit   - the tests that run no TFX component (582 tests, ~2 min; TESTS=... as for make test)"
	@echo "make lock   - re-resolve requirements.in into requirements.lock"
	@echo "make airflow-venv  - build .venv-airflow (the project + Airflow 2.10.3)"
	@echo "make airflow-test  - load dags/pipeline_dag.py in Airflow and run it once (airflow dags test)"
	@echo "make airflow-lock  - re-resolve requirements-airflow.in after a change to requirements.lock"
	@echo "make flink-up    - start a local Flink cluster on 127.0.0.1 (ARGS='--task-managers 2'; fetches jars once)"
	@echo "make flink-run   - run the pipeline's Beam jobs on it (ARGS='--train-steps 200 ...')"
	@echo "make flink-down  - stop it"
	@echo "make flink-fetch - only fetch Flink's jars (PyPI) and Beam's Flink job server (Maven Central)"
	@echo "make clean  - remove outputs/ (pipeline artifacts, metadata, pushed models)"

$(STAMP): requirements.lock setup.py
	@test -n "$(PYTHON)" || { echo "Python 3.10 not found (TFX 1.16 needs it); set PYTHON=/path/to/python3.10"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	$(PY) -m uv pip install -q --compile-bytecode --python $(PY) -r requirements.lock
	$(PY) -m uv pip install -q --python $(PY) --no-deps -e .
	@touch $(STAMP)

venv: $(STAMP)

$(AIRFLOW_STAMP): requirements-airflow.lock setup.py $(STAMP)
	@test -x $(AIRFLOW_PY) || $(PYTHON) -m venv $(AIRFLOW_VENV)
	$(PY) -m uv pip install -q --compile-bytecode --python $(AIRFLOW_PY) -r requirements-airflow.lock
	$(PY) -m uv pip install -q --python $(AIRFLOW_PY) --no-deps -e .
	@touch $(AIRFLOW_STAMP)

airflow-venv: $(AIRFLOW_STAMP)

airflow-test: $(STAMP) $(AIRFLOW_STAMP)
	$(PY) -m pytest tests/dags/test_pipeline_dag.py $(PYTEST_ARGS)

run: $(STAMP)
	$(PY) local_runner.py $(ARGS)

# Batch scoring with the served model (pipeline/scoring.py) -> outputs/<problem>/scores/.
score: $(STAMP)
	$(PY) score_runner.py $(ARGS)

# Compiles offline; --submit needs network access and Google Cloud credentials.
vertex: $(STAMP)
	$(PY) vertex_runner.py $(ARGS)

# Continuous training: one decision (and a run if a trigger fired).
ct: $(STAMP)
	$(PY) -m continuous_training.controller $(ARGS)

# The gate, then a pipeline release that the CT controller runs.
release: $(STAMP)
	$(PY) -m pipeline.release create $(ARGS)

# All spans in time order through the CT controller -> outputs/<problem>/replay/.
replay: $(STAMP)
	$(PY) -m continuous_training.replay $(ARGS)

serve: $(STAMP)
	$(PY) -m serving --model_name $(PROBLEM) --model_base_path outputs/serving/$(PROBLEM) $(SERVE_ARGS)

# The web UI (ui/): runs, data, models, serving, lineage; read-only, loopback.
ui: $(STAMP)
	$(PY) -m ui $(ARGS)

# What `make test` sets up itself (no root needed): the Airflow venv, and
# Flink's jars when a JDK and Maven are installed. The system packages some
# tests need are `sudo .ci/system-packages`'s; the run's last line names
# any that were missing.
test-setup: $(STAMP) $(AIRFLOW_STAMP)
	@if command -v javac >/dev/null && command -v mvn >/dev/null; then \
	  $(PY) -m cluster fetch; \
	else echo "make test: no JDK or Maven: the Flink tests will be skipped"; fi

# A fixed hash seed makes the suite's pipeline runs the same run to run
# (ops/reproducible.py; the entry points set it themselves).
test: test-setup
	PYTHONHASHSEED=0 $(PY) -m pytest $(TEST_PATHS) $(XDIST) $(PYTEST_ARGS)

# The tests that run no TFX component or pipeline (a few minutes).
unit: $(STAMP)
	PYTHONHASHSEED=0 $(PY) -m pytest $(TEST_PATHS) -m 'not integration and not e2e' $(XDIST) $(PYTEST_ARGS)

# Regenerate the lock after editing requirements.in.
lock: $(STAMP)
	$(PY) -m uv pip compile requirements.in --python-version 3.10 \
	  --python-platform x86_64-manylinux_2_28 -o requirements.lock

# The main lock's pins as constraints, minus the packages Airflow needs at
# other versions (the `unpinned-from-main:` line of requirements-airflow.in).
airflow-lock: $(STAMP)
	@mkdir -p build
	unpinned=$$(sed -n 's/^# unpinned-from-main: //p' requirements-airflow.in | tr ' ' '|'); \
	  grep -vE "^($$unpinned)==" requirements.lock > build/airflow-constraints.txt
	$(PY) -m uv pip compile requirements-airflow.in -c build/airflow-constraints.txt \
	  --python-version 3.10 --python-platform x86_64-manylinux_2_28 \
	  --custom-compile-command 'make airflow-lock' -o requirements-airflow.lock

# A local Flink cluster (cluster/): JobManager, TaskManagers, Beam's job
# server and a Python worker pool, all started and stopped by python -m cluster.
flink-fetch: $(STAMP)
	$(PY) -m cluster fetch

flink-up: $(STAMP)
	$(PY) -m cluster up $(ARGS)

# Stops (cluster flags exits 1) when no cluster runs, rather than falling
# back to the DirectRunner with empty Beam flags.
flink-run: $(STAMP)
	@flags=$$($(PY) -m cluster flags) && set -x && $(PY) beam_runner.py $(ARGS) -- $$flags

flink-down: $(STAMP)
	$(PY) -m cluster down

clean:
	rm -rf outputs
