"""What both sides keep on disk and how they keep it safe: the block ledger, provenance records and
their validation, atomic writes, checksums, safe names, disk-space checks and crash failpoints."""
