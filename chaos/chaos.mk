# Hardening targets: audit, chaos, soak; included by the Makefile. Uses $(STAMP) and $(BIN) from it.
CHAOS_SECONDS ?= 120
CHAOS_RATE ?= 20
CHAOS_SEED ?= 1
SOAK_TASKS ?= 100000

.PHONY: audit chaos chaos-smoke soak

audit: $(STAMP) ## pip-audit the installed dependencies (needs the PyPI or OSV vulnerability service)
	$(BIN)/pip-audit --skip-editable --strict --progress-spinner off

chaos: $(STAMP) ## faults under load: SIGKILLs, Redis restarts; counts lost, stuck, duplicates, lies
	$(BIN)/python -m chaos --seconds $(CHAOS_SECONDS) --rate $(CHAOS_RATE) --seed $(CHAOS_SEED) \
		--json docs/chaos-latest.json --markdown docs/chaos-latest.md

chaos-smoke: $(STAMP) ## a 20 s chaos run with fewer faults (also part of make test)
	$(BIN)/python -m chaos --seconds 20 --rate 10 --seed $(CHAOS_SEED) --smoke

soak: $(STAMP) ## SOAK_TASKS tasks through one stack; memory of every service, plotted to docs/soak.png
	$(BIN)/python -m chaos.soak --tasks $(SOAK_TASKS) --out docs
