"""Prefect flows of emzip (composition only) and the ``emzip`` command line.

Importing this package routes emzip's own log lines (``emzip.codec``: fallback and verification
reasons; ``emzip.transfer``: Globus cancellations and duplicates; ``emzip.watch``) into the run's
log in Prefect, wherever a flow runs: the command line, a deployment's worker process, a Dask
worker (``flows.dask_preload``). See ``flows.logs``.
"""

from flows.logs import send_emzip_logs_to_prefect

send_emzip_logs_to_prefect()
