"""emzip's pipeline work as plain functions, one package a side (the Prefect wrappers are ``flows.steps``).

``edge``: beside the microscope; ``datacenter``: where blocks are restored and archived;
``source``: the acquisition both read; ``store``: the ledger and safe on-disk records both keep;
``transfer``: moving files between them (Globus, or a local folder).
"""
