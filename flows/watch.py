"""``emzip watch ROOT``: turn finished acquisition files into Prefect events.

watchdog reports files closed after writing (and files renamed into place) under ``ROOT``; each
volume (the first folder level under ROOT) emits at most one ``emzip.acquisition.file-written``
event per ``debounce`` seconds, with the volume's name in the resource and payload, so the
triggered deployment scans that volume at once. A missed event costs only latency: the interval
schedule is the safety net.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from watchdog.events import FileClosedEvent, FileMovedEvent, FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from flows.events import ACQUISITION_WRITTEN, VOLUME_RESOURCE_PREFIX

log = logging.getLogger("emzip.watch")


class _Debouncer(FileSystemEventHandler):
    def __init__(self, root: Path, debounce: float) -> None:
        self.root = root.resolve()
        self.debounce = debounce
        self.last: dict[str, float] = {}
        self.lock = threading.Lock()
        self.emitted = 0

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory or not isinstance(event, FileClosedEvent | FileMovedEvent):
            return
        path = Path(str(event.dest_path if isinstance(event, FileMovedEvent) else event.src_path))
        if path.name.startswith(".") or path.suffix == ".part":
            return
        try:
            volume = path.resolve().relative_to(self.root).parts[0]
        except (ValueError, IndexError):
            return
        now = time.monotonic()
        with self.lock:
            if now - self.last.get(volume, -1e9) < self.debounce:
                return
            self.last[volume] = now
        emit(volume, path)
        self.emitted += 1


def emit(volume: str, path: Path) -> None:
    """Send one acquisition event for ``volume`` to the Prefect API."""
    from prefect.events import emit_event

    emit_event(
        ACQUISITION_WRITTEN,
        resource={"prefect.resource.id": f"{VOLUME_RESOURCE_PREFIX}{volume}", "emzip.volume": volume},
        payload={"volume": volume, "path": str(path)},
    )
    log.info("%s: %s written, event sent", volume, path.name)


def watch(root: Path, debounce: float = 5.0, stop: threading.Event | None = None) -> int:
    """Watch ``root`` until interrupted (or ``stop`` is set); returns the number of events sent."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: acquisition root folder does not exist")
    handler = _Debouncer(root, debounce)
    observer = Observer()
    observer.schedule(handler, str(root), recursive=True)
    observer.start()
    log.info("watching %s", root)
    stop = stop or threading.Event()
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        observer.stop()
        observer.join()
        from prefect.events.worker import EventsWorker

        EventsWorker.drain_all()
    return handler.emitted
