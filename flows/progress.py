"""A run's progress bar in the Prefect UI, updated at most every few seconds.

Each update is a request to the Prefect API that the flow waits for (about 20 ms against a
server on the same 2-core node, plus the server's own CPU). Once per block that was 0.33 s of a
16-block edge run; a bar that moves every few seconds tells an operator the same.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prefect.artifacts import create_progress_artifact, update_progress_artifact

#: The least time between two updates of a progress artifact (the last, at 100%, always goes).
PROGRESS_INTERVAL_S = 5.0


class ProgressBar:
    """A Prefect progress artifact that skips updates within ``interval`` seconds of the last one."""

    def __init__(
        self,
        key: str,
        description: str,
        interval: float = PROGRESS_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.artifact_id: Any = create_progress_artifact(0.0, key=key, description=description)
        self._interval = interval
        self._clock = clock
        self._last = clock()

    def update(self, percent: float) -> bool:
        """Show ``percent`` (0-100) unless the last update was under ``interval`` s ago; 100 always shows.

        Returns whether the artifact was updated.
        """
        now = self._clock()
        if percent < 100.0 and now - self._last < self._interval:
            return False
        update_progress_artifact(self.artifact_id, min(max(percent, 0.0), 100.0))
        self._last = now
        return True
