"""`MediaStore`: the frontend's content-addressed folder of media sources, read by the preprocessors.

A request carries no pixels or samples to the engine: each media item's source is written here once (or,
for a file the caller named, referenced where it is) and the item's `MediaPlan` names the file. Whoever
encodes the item (encoder worker, side-stream preprocessor, in-process engine) reads it from there.

    encoded bytes / data URL  ->  <root>/<key>.bin   (the bytes as given: decoders sniff the format)
    a path                    ->  that path, not copied (the API's file store is immutable already)
    an array / PIL image      ->  <root>/<key>.npy   (uint8 [H, W, 3], uint8 [T, H, W, 3] or float32 [S])

Files are keyed by a content hash, so equal sources share one file. A `MediaLease` counts the files one
prompt holds; `release` (when its requests finished, failed or were aborted) deletes a file once no lease
holds it. A job still reading a released file can only belong to a request that is gone (its result is
dropped), so early deletion never hurts a live request. The folder (named with the owner's pid) is removed
when the store is, or, if its process was killed, by the next store that starts (`OMNISERVE_MEDIA_DIR`
sets its parent; default: the system temp dir).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from omniserve import envs
from omniserve.multimodal import StoredMedia

_PREFIX = "omniserve-media-"


@dataclass
class MediaLease:
    """The store files one prompt holds, released together once each of its `users` (the prompt's engine
    requests, e.g. n samples) has released it."""

    keys: list[str] = field(default_factory=list)
    users: int = 1


class MediaStore:
    def __init__(self, parent: str | Path | None = None) -> None:
        parent = parent or envs.media_dir() or tempfile.gettempdir()
        Path(parent).mkdir(parents=True, exist_ok=True)
        _sweep_orphans(Path(parent))
        self.root = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=parent))
        self._lock = threading.Lock()
        self._refs: dict[str, int] = {}  # key -> leases holding it
        self._finalizer = weakref.finalize(self, shutil.rmtree, self.root, ignore_errors=True)

    def _hold(self, key: str, lease: MediaLease, write) -> Path:
        """The file of `key`, written by `write(path)` unless it exists; counted in `lease`."""
        path = self.root / key
        with self._lock:
            if self._refs.get(key, 0) == 0:
                temporary = path.with_name(f".{key}.{threading.get_ident()}.tmp")
                write(temporary)
                os.replace(temporary, path)
            self._refs[key] = self._refs.get(key, 0) + 1
            lease.keys.append(key)
        return path

    def put_bytes(self, data: bytes, digest: str, lease: MediaLease) -> StoredMedia:
        path = self._hold(f"{digest}.bin", lease, lambda target: Path(target).write_bytes(data))
        return StoredMedia(str(path), "encoded")

    def put_array(self, array: np.ndarray, digest: str, lease: MediaLease) -> StoredMedia:
        def write(target: Path) -> None:
            with open(target, "wb") as file:
                np.save(file, np.ascontiguousarray(array), allow_pickle=False)

        path = self._hold(f"{digest}.npy", lease, write)
        return StoredMedia(str(path), "array")

    def release(self, lease: MediaLease) -> None:
        """One user is done with the lease; after the last, files no lease holds any more are deleted.
        Releasing a lease with no users left does nothing."""
        with self._lock:
            if lease.users <= 0:
                return
            lease.users -= 1
            if lease.users:
                return
            for key in lease.keys:
                count = self._refs.get(key, 0) - 1
                if count > 0:
                    self._refs[key] = count
                    continue
                self._refs.pop(key, None)
                try:
                    (self.root / key).unlink()
                except FileNotFoundError:
                    pass

    @property
    def num_files(self) -> int:
        with self._lock:
            return len(self._refs)

    def close(self) -> None:
        self._finalizer()


def _sweep_orphans(parent: Path) -> None:
    """Remove the folders of stores whose process is gone (killed before its exit hooks ran: a server
    stopped by SIGTERM exits through the signal)."""
    for folder in parent.glob(f"{_PREFIX}*-*"):
        pid = folder.name.removeprefix(_PREFIX).split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:  # alive, another user's
            pass


def reference_file(path: str | os.PathLike[str]) -> StoredMedia:
    """A caller's own file, used in place (not copied, not counted)."""
    return StoredMedia(str(Path(path).resolve()), "encoded")
