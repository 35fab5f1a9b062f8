"""Start one worker process: `python -m services.worker`."""

from services.worker.runner import main
from shared.logging import configure_logging
from shared.runtime import run
from shared.settings import get_settings

settings = get_settings()
configure_logging("worker", settings)
run(main(settings))
