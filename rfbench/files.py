"""Writing files so that no reader ever sees half of one, and identifying files by their content.

One helper for every file rfbench writes (result cells, tables, plots, checkpoints, caches, samples): write to a
temporary file in the same folder, flush it to disk, then rename it over the target. A reader (or a second run
writing the same file) sees the old file or the new one, never a part; a crash leaves at most a hidden temporary
file; a link at the target is replaced by the new file, never written through (a ``results/w2_vs_nfe.png`` that
links to a file elsewhere leaves that file as it was). Torch-free: a checkpoint passes its own ``torch.save``, a
plot matplotlib's ``savefig``, as the writer.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from filelock import FileLock, Timeout


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(fh)`` on a temporary binary file beside ``path``, then rename it to ``path`` (a link there is
    replaced, its target left alone). The file gets the permissions ``open()`` would give it (the umask's), not
    ``mkstemp``'s private ones."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)      # reading the umask sets it: set it back at once
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@contextlib.contextmanager
def exclusive(path: str | os.PathLike, waiting: Callable[[], None] = lambda: None) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (made, with its folder, when missing) for the block: between
    processes on this machine, and across machines on a shared file system that supports ``flock`` (NFS, and Lustre
    mounted with ``-o flock``). ``waiting()`` is called once when another process holds the lock, before waiting for
    it. The file stays behind, empty; a process killed while holding the lock releases it. A link at ``path`` is
    removed and a lock file made in its place: opening it would reach (and some filelock versions truncate) a file
    elsewhere."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        path.unlink(missing_ok=True)
    lock = FileLock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        waiting()
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write` of UTF-8 text."""
    return atomic_write(path, lambda fh: fh.write(text.encode()))


def sha1_files(*paths: str | os.PathLike) -> str:
    """SHA-1 (hex) of the files' bytes, in order, read in blocks: the identity of weights, checkpoints, samples and
    reference files by content, whatever their names or where they were found."""
    digest = hashlib.sha1()
    for path in paths:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


def folder_problem(path: str | os.PathLike, flag: str, what: str) -> str | None:
    """Why ``path`` cannot be the folder ``flag`` names (``what``: what rfbench writes there), in one line, or None.
    An existing folder is probed by creating and removing a file in it (permission bits say nothing to root, nor
    about a read-only mount); a folder still to be made needs its nearest existing parent to be a folder that can
    be written. Nothing is left behind. The path is taken as the run will take it (no ``~`` expansion)."""
    text = os.fspath(path)
    if not text.strip():
        return f"{flag} is empty; give the folder for {what} (e.g. {flag} runs/mine)"
    target = Path(text)
    try:
        if target.is_symlink() and not target.exists():
            return f"{flag} {target} is a link to {os.readlink(target)}, which does not exist"
        if target.exists() and not target.is_dir():
            return f"{flag} {target} is a file, not a folder; give a folder for {what}"
        probe_in = target
        while not probe_in.exists():
            if probe_in.parent == probe_in:
                break
            probe_in = probe_in.parent
        if not probe_in.is_dir():
            return f"{flag} {target}: {probe_in} is a file, so the folder for {what} cannot be made there"
    except OSError as exc:      # a parent that may not be looked into
        return f"{flag} {target} cannot be reached: {exc.strerror or exc}; give a folder you can write for {what}"
    try:
        fd, name = tempfile.mkstemp(prefix=".rfbench-probe-", dir=probe_in)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        where = "" if probe_in == target else f" (its nearest existing folder {probe_in} cannot be written)"
        return f"{flag} {target} cannot be written{where}: {exc.strerror or exc}; give a folder you can write for " \
               f"{what}"
    return None


def size_text(nbytes: float) -> str:
    """A number of bytes as people write it: 512 B, 3.2 MB, 80.0 GB (powers of 1000)."""
    units = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")
    power = 0
    while abs(nbytes) >= 1000 and power < len(units) - 1:
        nbytes /= 1000
        power += 1
    return f"{nbytes:.0f} B" if power == 0 else f"{nbytes:.1f} {units[power]}"


def free_space(path: str | os.PathLike) -> int | None:
    """Bytes free for this user on the disk that holds ``path`` (its nearest existing folder when it does not exist
    yet), or None when that cannot be read."""
    folder = Path(path)
    while not folder.is_dir() and folder.parent != folder:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def disk_full(exc: BaseException, path: str | os.PathLike, nbytes: int) -> bool:
    """Whether writing ``nbytes`` to ``path`` failed with ``exc`` because its disk is full: the error says so
    (ENOSPC, or EDQUOT: a quota), or it says nothing useful (torch.save reports a short write as a RuntimeError,
    "unexpected pos") and the disk has less than ``nbytes`` free."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    free = free_space(path)
    return free is not None and free < nbytes
