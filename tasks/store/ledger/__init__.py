"""The block ledger: one SQLite database per node recording every block's journey.

Its one public entry point is this package: ``Ledger`` and the names in ``__all__``. The parts:

- ``_schema``: the tables, the schema version and the in-place upgrades of older ledgers;
- ``_records``: block records, queries and the history of versions, which both sides read;
- ``_claims``: claims and state transitions, which both sides use;
- ``_edge``: volume bindings, discovery, superseding grown or changed blocks, transfer batches;
- ``_datacenter``: received blocks, refused files, pending pyramid footprints.
"""

from __future__ import annotations

from tasks.store.ledger._claims import Claims
from tasks.store.ledger._datacenter import DatacenterTransitions
from tasks.store.ledger._edge import EdgeTransitions
from tasks.store.ledger._records import (
    DEFAULT_LEASE_SECONDS,
    SHIPPED_STATES,
    STATES,
    TRANSITIONS,
    BlockRecord,
    worker_identity,
)
from tasks.store.ledger._schema import SCHEMA_VERSION, LedgerError

__all__ = [
    "DEFAULT_LEASE_SECONDS",
    "SCHEMA_VERSION",
    "SHIPPED_STATES",
    "STATES",
    "TRANSITIONS",
    "BlockRecord",
    "Ledger",
    "LedgerError",
    "worker_identity",
]


class Ledger(Claims, EdgeTransitions, DatacenterTransitions):
    """A node's block ledger at ``path`` (created on first use); see the package docstring for its parts."""
