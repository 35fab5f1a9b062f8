"""The common package: task model, Redis key schema, atomic transitions, settings and registry."""
