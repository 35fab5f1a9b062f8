# Benchmarks (issue 6): `make bench` compares ours with the peers, `make bench-quick` is ours
# only. Included from the Makefile, whose $(STAMP) installs the project's .venv. The peers
# get their own virtualenvs (arq needs redis-py < 6, so it has one of its own); matplotlib
# for the chart lives there too, not in the project's dependencies. docs/benchmarks.md
# explains the workloads and the results.
BENCH_DIR := benchmarks
PEERS_VENV := $(BENCH_DIR)/.venv-peers
PEERS_ARQ_VENV := $(BENCH_DIR)/.venv-peers-arq
PEERS_STAMP := $(PEERS_VENV)/.installed
PEERS_ARQ_STAMP := $(PEERS_ARQ_VENV)/.installed
BENCH_ARGS ?=

$(PEERS_STAMP): $(BENCH_DIR)/requirements-peers.txt
	@test -x $(PEERS_VENV)/bin/python || $(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(PEERS_VENV)/bin/python -m pip install --quiet -r $<
	@touch $@

$(PEERS_ARQ_STAMP): $(BENCH_DIR)/requirements-peers-arq.txt
	@test -x $(PEERS_ARQ_VENV)/bin/python || $(PYTHON) -m venv $(PEERS_ARQ_VENV)
	$(PEERS_ARQ_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(PEERS_ARQ_VENV)/bin/python -m pip install --quiet -r $<
	@touch $@

bench-redis:
	@command -v redis-server >/dev/null || { echo "make bench needs redis-server (Redis 7): apt-get install redis-server"; exit 1; }

bench: $(STAMP) $(PEERS_STAMP) $(PEERS_ARQ_STAMP) bench-redis ## compare with Huey, Taskiq, Dramatiq, SAQ, Celery, arq, RQ (< 30 min)
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

bench-quick: $(STAMP) bench-redis ## benchmark ours only (< 3 min)
	$(BIN)/python -m benchmarks.run --quick $(BENCH_ARGS)

.PHONY: bench bench-quick bench-redis
