# Hardening targets: audit, chaos, soak; included by the Makefile. Uses $(STAMP) and $(BIN) from it.
CHAOS_SECONDS ?= 120
CHAOS_RATE ?= 20
CHAOS_SEED ?= 1
# standalone (one Redis with AOF, restarted), cluster (6 nodes) or sentinel (primary + replica)
CHAOS_REDIS ?= standalone
# REDIS_WAIT_REPLICAS for the stack; cluster and sentinel only
CHAOS_WAIT_REPLICAS ?= 0
SOAK_TASKS ?= 100000

# standalone: docs/chaos-latest.*; cluster, sentinel: docs/chaos-<topology>.*, one run per
# CHAOS_WAIT_REPLICAS in each (a run replaces its own and keeps the other).
ifeq ($(CHAOS_REDIS),standalone)
CHAOS_OUT = docs/chaos-latest
CHAOS_TOPOLOGY =
else
CHAOS_OUT = docs/chaos-$(CHAOS_REDIS)
CHAOS_TOPOLOGY = --redis $(CHAOS_REDIS) --wait-replicas $(CHAOS_WAIT_REPLICAS)
endif

.PHONY: audit chaos chaos-smoke soak

audit: $(STAMP) ## pip-audit the installed dependencies (needs the PyPI or OSV vulnerability service)
	$(BIN)/pip-audit --skip-editable --strict --progress-spinner off

chaos: $(STAMP) ## faults under load: SIGKILLs, Redis restarts or failovers (CHAOS_REDIS=cluster|sentinel); counts lost, stuck, duplicates, lies
	$(BIN)/python -m chaos --seconds $(CHAOS_SECONDS) --rate $(CHAOS_RATE) --seed $(CHAOS_SEED) \
		$(CHAOS_TOPOLOGY) --json $(CHAOS_OUT).json --markdown $(CHAOS_OUT).md

chaos-smoke: $(STAMP) ## a 20 s chaos run with fewer faults (also part of make test)
	$(BIN)/python -m chaos --seconds 20 --rate 10 --seed $(CHAOS_SEED) --smoke $(CHAOS_TOPOLOGY)

soak: $(STAMP) ## SOAK_TASKS tasks through one stack; memory of every service, plotted to docs/soak.png
	$(BIN)/python -m chaos.soak --tasks $(SOAK_TASKS) --out docs
