"""Prefect tasks of emzip: thin wrappers over the codec and block I/O."""
