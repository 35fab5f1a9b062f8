"""Start one worker process: `python -m services.worker`."""

from services.worker.runner import main
from shared.logging import configure_logging
from shared.runtime import run, use_sched_policy
from shared.settings import get_settings

settings = get_settings()
configure_logging("worker", settings)
backlogged = use_sched_policy(settings.worker_sched_policy)  # before any thread starts
run(main(settings, on_backlog=backlogged))
