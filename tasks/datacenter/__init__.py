"""The data center: checking received containers, restoring them into OME-Zarr images with their
pyramids, asking for damaged deliveries again, saying what is missing, and converting whole
volumes into emzip archives."""
