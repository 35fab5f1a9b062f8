"""The task types a process knows: the built-in ones and the modules TASK_MODULES names.

Apart from shared.registry so that the registry does not import the built-in types, which
register themselves through it (the two used to import each other)."""

from __future__ import annotations

import importlib

from shared import builtin_tasks  # noqa: F401  (registers image, email and webhook)
from shared.settings import Settings


def load_task_modules(settings: Settings) -> None:
    """Import every module named in TASK_MODULES (the built-in types are registered by now)."""
    for module in settings.task_module_list:
        importlib.import_module(module)
