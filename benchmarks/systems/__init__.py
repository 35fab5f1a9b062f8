"""One module per system: its no-op task, its producer calls, and (peers) its app config.

These modules run inside each system's own virtualenv, so they import nothing from the
orchestrator and nothing from `shared` except `ours.py`.
"""
