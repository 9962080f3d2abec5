"""Who trains what: claim files with a lease, so that workers sharing a folder split the work.

A worker claims an item by writing ``claims/<item>.json`` while it holds the folder's lock
(``fcntl.flock`` on ``.lock``), keeps the claim fresh while it trains (a heartbeat rewrites the
file's time every ``lease / 4`` seconds) and removes it once the item's line is in the results
file. A claim is free for the taking when its lease ran out (its worker died or lost the folder)
or, on the same machine, at once when its process no longer exists: a worker killed with
``kill -9`` never holds its item hostage. Claims also work across machines that share a
folder (the lease) and under W&B sweep agents (each agent run is one more worker).

Chosen over a fixed index partition because a killed or slow worker's items are taken over by
the others, and any number of workers can join or leave at any time.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Iterator, Optional


def default_worker() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Claims:
    """The claims of one ground-truth folder, for one worker."""

    def __init__(self, folder: Path, worker: str, lease_s: float) -> None:
        self.folder = Path(folder)
        self.dir = self.folder / "claims"
        self.worker = worker
        self.lease_s = float(lease_s)
        self.dir.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """The folder's lock: every claim decision and every append to the results file is made under it."""
        with open(self.folder / ".lock", "a") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def _path(self, item: str) -> Path:
        return self.dir / f"{item}.json"

    def holder(self, item: str) -> Optional[dict]:
        """The live claim on ``item`` (None if unclaimed or the claim is stale)."""
        path = self._path(item)
        try:
            claim = json.loads(path.read_text())
            age = time.time() - path.stat().st_mtime
        except (OSError, ValueError):
            return None
        if age > self.lease_s:
            return None
        if claim.get("host") == socket.gethostname() and not _process_alive(int(claim.get("pid", -1))):
            return None
        return claim

    def take(self, item: str) -> None:
        """Claim ``item`` (under the lock, after checking :meth:`holder`)."""
        claim = {"worker": self.worker, "host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}
        tmp = self._path(item).with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(claim))
        os.replace(tmp, self._path(item))

    def release(self, item: str) -> None:
        self._path(item).unlink(missing_ok=True)

    def prune(self, done) -> None:
        """Remove the claims no live worker holds: those of finished items (a worker killed between
        appending its line and releasing its claim) and stale ones. Call under :meth:`lock`."""
        for path in self.dir.glob("*.json"):
            if path.stem in done or self.holder(path.stem) is None:
                path.unlink(missing_ok=True)

    @contextlib.contextmanager
    def heartbeat(self, item: str) -> Iterator[None]:
        """Keep the claim on ``item`` fresh while the body runs."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.lease_s / 4):
                with contextlib.suppress(OSError):
                    os.utime(self._path(item))

        thread = threading.Thread(target=beat, name=f"claim-{item}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
