"""Prefect flows of emzip (composition only) and the ``emzip`` command line."""
