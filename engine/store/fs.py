"""The filesystem seam of the run store, and THE one atomic-write helper (L3).

Committed files (shards, the manifest, the report, the reparse intent) are reached only through a
:class:`Storage`, by name relative to the run (``"data/part-00003.parquet"``, ``"manifest.json"``). The
journal and the run lock are always on local disk and are not behind the seam.

A commit is "write the object under its final, deterministic name, then record it": a file is first
written to a LOCAL staging path (:meth:`Storage.local_temp`), then :meth:`Storage.commit` makes it visible
under its final name in one step. :class:`LocalStorage` stages next to the final name and renames (fsync
the file, rename, fsync the folder). An object-store implementation (fsspec) would stage in a local
folder of the run and commit with one PUT (visible whole or not at all; there is no rename), refresh its
cached listings in :meth:`Storage.refresh`, and could use a conditional create (``If-None-Match: *``) as
a commit marker. Nothing above this module knows which one it has.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from engine.core.errors import StorageError

if TYPE_CHECKING:
    import pyarrow as pa

#: suffix of a staged (not yet committed) file; whatever carries it after a crash is dropped on start-up
TMP = ".tmp"


def storage_error(e: OSError, what: str) -> StorageError:
    """An OSError while writing ``what``, as a StorageError with what to do about it."""
    if e.errno == errno.ENOSPC:
        hint = "the disk is full; free space and run the same command again to resume"
    elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "write permission was lost; fix the permissions and run the same command again to resume"
    else:
        hint = "fix the problem and run the same command again to resume"
    return StorageError(f"cannot write {what} ({e.strerror or e}); {hint}")


def fsync(p: Path) -> None:
    """Flush a file's data, or a folder's entries (a rename, a new or deleted file), to disk."""
    fd = os.open(p, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)




def commit_file(tmp: Path, final: Path) -> None:
    """THE atomic local write: ``tmp`` (complete) is fsynced, renamed to ``final``, the folder fsynced.

    A reader sees the old ``final`` or the new one, never half of one, and after a crash the rename either
    happened or did not. Raises OSError (callers translate it with :func:`storage_error`)."""
    fsync(tmp)
    os.replace(tmp, final)
    fsync(final.parent)


@contextlib.contextmanager
def atomic_output(final: Path, what: str | None = None) -> Iterator[Path]:
    """Write a file outside the store (e.g. an export) atomically: yields a temp path in the same folder
    to write; when the block ends without error it is committed with :func:`commit_file`, otherwise
    removed. OSError becomes StorageError."""
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        commit_file(tmp, final)
    except OSError as e:
        raise storage_error(e, what or str(final)) from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


@runtime_checkable
class Storage(Protocol):
    """Where a run's committed files live. Names are relative, ``/``-separated (``"data/part-00000.parquet"``).

    Every method raises StorageError for a write that failed (with :func:`storage_error`'s hint) and
    OSError / FileNotFoundError for a read that failed (readers translate it into their own message)."""

    #: for messages: where the files are (a path or a URL)
    where: str

    def exists(self, name: str) -> bool: ...

    def list(self, folder: str) -> list[str]:
        """Names of the committed files directly in ``folder`` (not staged ones), sorted; [] if none."""
        ...

    def read_bytes(self, name: str) -> bytes: ...

    def open_input(self, name: str) -> pa.NativeFile:
        """A readable pyarrow file (``pq.ParquetFile`` reads it); the caller closes it."""
        ...

    def mtime(self, name: str) -> float | None:
        """When ``name`` was last committed (epoch seconds), None when it is not there."""
        ...

    def local_temp(self, name: str) -> Path:
        """The LOCAL path to write a file to before :meth:`commit` makes it ``name`` (its folder exists)."""
        ...

    def commit(self, local_tmp: Path, name: str) -> None:
        """Make the complete file ``local_tmp`` visible as ``name``, whole, in one step (replacing it)."""
        ...

    def write_atomic(self, name: str, data: bytes) -> None:
        """``data`` as ``name``, whole or not at all."""
        ...

    def delete(self, name: str) -> None:
        """Remove ``name`` (durably); no error when it is not there."""
        ...

    def discard_staged(self) -> int:
        """Delete every staged file a crash left behind (start-up recovery). Returns how many."""
        ...

    def refresh(self) -> None:
        """Forget cached listings (an object store's can be stale); recovery calls it before it scans."""
        ...


class LocalStorage:
    """The run directory on a local (POSIX) filesystem: stage next to the final name, fsync, rename."""

    #: folders whose staged files recovery drops (and the run's top folder)
    FOLDERS = ("", "data", "failures")

    def __init__(self, root: Path):
        self.root = Path(root)
        self.where = str(self.root)

    def path(self, name: str) -> Path:
        return self.root / name

    def exists(self, name: str) -> bool:
        return self.path(name).exists()

    def list(self, folder: str) -> list[str]:
        d = self.path(folder)
        try:
            entries = os.listdir(d)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(f"{folder}/{e}" if folder else e for e in entries if not e.endswith(TMP))

    def read_bytes(self, name: str) -> bytes:
        return self.path(name).read_bytes()

    def open_input(self, name: str) -> pa.NativeFile:
        import pyarrow as pa  # lazy: the manifest and the journal need no pyarrow

        return pa.OSFile(str(self.path(name)), "rb")

    def mtime(self, name: str) -> float | None:
        try:
            return self.path(name).stat().st_mtime
        except OSError:
            return None

    def local_temp(self, name: str) -> Path:
        p = self.path(name + TMP)
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise storage_error(e, f"{p.parent}") from None
        return p

    def commit(self, local_tmp: Path, name: str) -> None:
        try:
            commit_file(local_tmp, self.path(name))
        except OSError as e:
            raise storage_error(e, str(self.path(name))) from None

    def write_atomic(self, name: str, data: bytes) -> None:
        tmp = self.local_temp(name)
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise storage_error(e, str(self.path(name))) from None
        self.commit(tmp, name)

    def delete(self, name: str) -> None:
        p = self.path(name)
        try:
            p.unlink(missing_ok=True)
            fsync(p.parent)
        except FileNotFoundError:  # the folder is gone too
            return
        except OSError as e:
            raise storage_error(e, str(p)) from None

    def discard_staged(self) -> int:
        n = 0
        for folder in self.FOLDERS:
            d = self.path(folder)
            if not d.is_dir():
                continue
            for p in d.glob("*" + TMP):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
                    n += 1
        return n

    def refresh(self) -> None:
        return None


def as_storage(where: Storage | Path) -> Storage:
    """A Storage for a run; a plain path is the local run directory there."""
    return LocalStorage(where) if isinstance(where, Path) else where


class SubStorage:
    """The files of one folder of another :class:`Storage` (e.g. a stage's ``stages/generate/``), by names
    relative to that folder. Staging, recovery's scans and listings' refresh are the parent's (one local
    staging area per run)."""

    def __init__(self, parent: Storage, folder: str):
        self.parent = parent
        self.prefix = folder.strip("/") + "/"
        self.where = f"{parent.where}/{folder.strip('/')}"

    def _name(self, name: str) -> str:
        return self.prefix + name if name else self.prefix.rstrip("/")

    def exists(self, name: str) -> bool:
        return self.parent.exists(self._name(name))

    def list(self, folder: str) -> list[str]:
        n = len(self.prefix)
        return [name[n:] for name in self.parent.list(self._name(folder)) if name.startswith(self.prefix)]

    def read_bytes(self, name: str) -> bytes:
        return self.parent.read_bytes(self._name(name))

    def open_input(self, name: str) -> pa.NativeFile:
        return self.parent.open_input(self._name(name))

    def mtime(self, name: str) -> float | None:
        return self.parent.mtime(self._name(name))

    def local_temp(self, name: str) -> Path:
        return self.parent.local_temp(self._name(name))

    def commit(self, local_tmp: Path, name: str) -> None:
        self.parent.commit(local_tmp, self._name(name))

    def write_atomic(self, name: str, data: bytes) -> None:
        self.parent.write_atomic(self._name(name), data)

    def delete(self, name: str) -> None:
        self.parent.delete(self._name(name))

    def discard_staged(self) -> int:
        return self.parent.discard_staged()

    def refresh(self) -> None:
        self.parent.refresh()


def sub_storage(storage: Storage, folder: str) -> Storage:
    """A Storage for the files under ``folder`` of ``storage``: a local run's is the local folder itself (its
    own staged files dropped by its own recovery); any other's, a :class:`SubStorage` view."""
    if isinstance(storage, LocalStorage):
        return LocalStorage(storage.root / folder)
    return SubStorage(storage, folder)
