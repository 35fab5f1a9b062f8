"""The orchestrator: Redis, processes, workloads, report. Runs in the project's .venv."""
