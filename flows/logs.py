"""emzip's log lines in the Prefect run log, not only on a console nobody watches.

Prefect sends the records of its run loggers to its API, and of the "extra loggers" named in
``PREFECT_LOGGING_EXTRA_LOGGERS``, which it wires up as it is imported. emzip logs through
``emzip.*`` loggers (the codec is a pure library and knows nothing of Prefect), so:

- before Prefect is imported (the command line), the setting is put in the environment, where
  Prefect reads it; a process started from here (verifiers, Dask workers) inherits it;
- after (a worker that imported Prefect, then loaded a flow), the handlers Prefect gives its
  extra loggers (those of ``prefect.extra``) are given to ``emzip`` the same way.

Either way ``emzip`` logs at INFO (a logger without a level would take the root's WARNING), and a
record outside any run is dropped quietly rather than warned about (``emzip compress``, say).
"""

from __future__ import annotations

import logging
import os
import sys

EMZIP_LOGGER = "emzip"

__all__ = ["EMZIP_LOGGER", "send_emzip_logs_to_prefect"]


def send_emzip_logs_to_prefect() -> None:
    """Route ``emzip.*`` records to Prefect's API handler (idempotent)."""
    extra = [name for name in os.environ.get("PREFECT_LOGGING_EXTRA_LOGGERS", "").split(",") if name.strip()]
    if EMZIP_LOGGER not in extra:
        os.environ["PREFECT_LOGGING_EXTRA_LOGGERS"] = ",".join([*extra, EMZIP_LOGGER])
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
    logger = logging.getLogger(EMZIP_LOGGER)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    configuration = sys.modules.get("prefect.logging.configuration")
    if configuration is not None and getattr(configuration, "PROCESS_LOGGING_CONFIG", None):
        for handler in logging.getLogger("prefect.extra").handlers:  # what setup_logging gives extra loggers
            if handler not in logger.handlers:
                logger.addHandler(handler)
