"""Readers of the older container formats (v1, v2, v3), kept apart from the v4 path.

Facilities hold v1-v3 containers; every one of them must keep decoding (tests/test_golden.py).
Nothing here writes a new container: format v4 (:mod:`codec.v4`) is the only one written.

- v1/v2: :mod:`learned` (row passes, :mod:`quantize` integer model, :mod:`context`), coded by
  :mod:`entropy` with constriction.
- v3: :mod:`lattice_codec` (lattice groups, :mod:`lattice`), the float32-exact model of
  :mod:`frozen` / :mod:`exact`; :mod:`freeze` and :mod:`network` remain because the tests
  re-encode v3 golden streams with them; :mod:`analysis` gives ``emzip bench`` per-voxel maps of v3 blocks.
"""
