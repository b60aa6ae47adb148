"""Atomic file and directory writes, and hashing. Numpy-free and torch-free.

A killed process must leave either the old file or the new one, never half of one:
every write goes to a temporary name in the same directory, is fsync'ed, then renamed.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgempir.errors import EdgempirError, WriteError

# errno values that say the disk cannot take the write (as opposed to a bug in the caller):
# inside a writer's body only these become WriteErrors; everything else is re-raised as is
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO})


def show_path(path: str | os.PathLike) -> str:
    """``path`` for a one-line message: as is when printable, else quoted like repr(), so
    that a newline inside a user's path cannot split the message."""
    text = os.fspath(path)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    return text if text.isprintable() else repr(text)


def write_error(path: str | os.PathLike, e: OSError) -> WriteError:
    """A one-line WriteError for ``e``, raised while writing ``path`` (old version kept)."""
    reason = e.strerror or str(e) or type(e).__name__
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        hint = "free some disk space or write elsewhere, then run the command again"
    else:
        hint = "check that the folder is writable, then run the command again"
    err = WriteError(f"cannot write {show_path(path)} ({reason}); {hint}; the previous version, if "
                     "any, is unchanged")
    err.errno = e.errno
    return err


def _is_disk_error(e: BaseException) -> bool:
    return isinstance(e, OSError) and not isinstance(e, EdgempirError) and \
        e.errno in DISK_ERRNOS


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable."""
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a kill or a full disk leaves the old file or the new.

    Any OSError (disk full, read-only folder) becomes a one-line :class:`WriteError`.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with _removing_on_failure(tmp, path):
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # delayed allocation reports ENOSPC here, not at write()
        os.replace(tmp, path)
    fsync_dir(path.parent)


@contextlib.contextmanager
def _removing_on_failure(tmp: Path, path: Path) -> Iterator[None]:
    """Around the steps of an atomic write that make ``tmp`` and rename it onto ``path``: on
    any failure the temporary file goes, and an OSError becomes a one-line WriteError."""
    try:
        yield
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(e, OSError) and not isinstance(e, EdgempirError):
            raise write_error(path, e) from e
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def dumps_json(obj: Any) -> str:
    """The one way edgempir writes JSON: strict (NaN and Infinity are not JSON, and would
    make the file unreadable to every strict reader), indented."""
    try:
        return json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n"
    except ValueError as e:
        raise EdgempirError(f"refusing to write a non-finite number as JSON ({e}); nothing "
                            "was written") from None


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as strict JSON (see :func:`dumps_json`), atomically."""
    atomic_write_text(path, dumps_json(obj))


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write to; it is renamed onto ``path`` on success."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_error(path, e) from e
    try:
        yield tmp
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(e, OSError) and _is_disk_error(e):  # the caller's writer hit a full disk
            raise write_error(path, e) from e
        raise
    with _removing_on_failure(tmp, path):
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    fsync_dir(path.parent)


def _fsync_tree(root: Path) -> None:
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            try:
                fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            except OSError:
                continue  # nothing we can flush
            try:
                os.fsync(fd)
            except OSError as e:
                # ENOSPC or EIO here means the data never reached the disk: the tree is not
                # complete and must not replace the old one. Other errors (EINVAL on
                # filesystems without fsync) say nothing about the data.
                if e.errno in DISK_ERRNOS:
                    raise
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one step (Linux renameat2 RENAME_EXCHANGE).

    Returns False where the C library or the filesystem cannot do it; the caller then
    falls back to two renames, which leave a moment where neither tree is at ``b``.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def swap_in(tmp: Path, path: Path) -> None:
    """Put the finished tree ``tmp`` at ``path``, replacing an existing one (a kill leaves
    the old tree or the new one at ``path``)."""
    if _exchange(tmp, path):
        shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old tree
        return
    old = path.with_name(f"{path.name}.old-{os.getpid()}")
    os.replace(path, old)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.replace(old, path)  # put the old tree back rather than leave nothing at path
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, replace: bool = False) -> Iterator[Path]:
    """Build a directory at ``DIR.tmp-<pid>`` and rename it onto ``path`` when done.

    With ``replace`` an existing ``path`` is swapped out only after the new tree is
    complete and on disk, in one atomic exchange where the system has one (Linux), so a
    kill leaves the old tree or the new one. A full disk, in the body or while flushing,
    is a :class:`WriteError` and leaves the old tree.
    """
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    except OSError as e:
        raise write_error(path, e) from e
    try:
        yield tmp
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError) and _is_disk_error(e):  # the caller's writers hit a full disk
            raise write_error(path, e) from e
        raise
    try:
        _fsync_tree(tmp)
        if path.exists():
            if not replace:
                raise FileExistsError(errno.EEXIST, "exists", str(path))
            swap_in(tmp, path)
        else:
            os.replace(tmp, path)  # ENOTEMPTY/EEXIST if another process put a tree there
        fsync_dir(path.parent)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError) and e.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise WriteError(f"{show_path(path)} was created by another command while this one "
                             "ran; nothing of this run was written there: choose another "
                             "output, or pass --force to replace it") from None
        if isinstance(e, OSError) and not isinstance(e, EdgempirError):
            raise write_error(path, e) from e
        raise


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()
