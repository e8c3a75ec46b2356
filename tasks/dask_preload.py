"""Dask worker preload for the restore: import the restore code and build the coder's tables.

A worker started with ``--preload tasks.dask_preload`` (``flows.restore.dask_task_runner``
passes it to the local cluster's workers) pays for torch, TensorStore and the codec's probability
tables (about 3 s in all) once as it starts, not in its first restore task: on a short run the
first block's warm-up would otherwise decide how well the workers scale.
"""

from __future__ import annotations

import tasks.steps  # noqa: F401 (imported for its side effect: the restore task's modules loaded)
from codec import tables

tables.warm()
