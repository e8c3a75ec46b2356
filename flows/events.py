"""Event names shared by the flows, the watcher and the deployments' triggers (one place)."""

ACQUISITION_WRITTEN = "emzip.acquisition.file-written"
"""Emitted by ``emzip watch`` when a slice or chunk file of a volume is complete."""
TRANSFER_COMPLETED = "emzip.transfer.completed"
"""Emitted by the acquisition flow when a batch arrived verified at the data center."""
VOLUME_RESOURCE_PREFIX = "emzip.volume."
"""Resource ids: ``emzip.volume.<volume name>``."""
