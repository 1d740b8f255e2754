"""Files only the proxy's user may read: folders 0700, files 0600 whatever the umask, and
replaced atomically so a crash at any point leaves either the old or the new file."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path


def write_atomically(target: Path, data: bytes) -> None:
    """Replace `target` with `data` (mode 0600): temporary file in the same folder, fsync,
    rename over the target, fsync the folder. A crash leaves `<stem>.*.tmp` behind at most."""
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f"{target.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)  # mkstemp's 0600 is still subject to the umask
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    fsync_dir(target.parent)


def open_private(path: Path) -> int:
    """Open (creating) a file for reading and writing, mode 0600."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) != 0o600:
            os.fchmod(fd, 0o600)
    except BaseException:
        os.close(fd)
        raise
    return fd


def make_private_folder(path: Path, tighten_existing: bool) -> None:
    """Create `path` with mode 0700 (its parent must exist); an existing folder is made 0700
    only when `tighten_existing` (a shared parent volume is left alone)."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        if tighten_existing and stat.S_IMODE(os.stat(path).st_mode) != 0o700:
            os.chmod(path, 0o700)
        return
    os.chmod(path, 0o700)  # mkdir's mode is still subject to the umask
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
