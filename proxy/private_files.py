"""Files only the proxy's user may read: folders 0700, files 0600 whatever the umask, and
replaced atomically so a crash at any point leaves either the old or the new file.

On Windows there are no such modes: a file is private through the ACL of its folder, which new
files inherit. The default store (platformdirs' per-user data folder under %LOCALAPPDATA%) is
readable by its user, SYSTEM and Administrators only; README, "Windows", says how to give a
service's store folder the same ACL. The POSIX-only calls (fchmod, opening a folder to fsync it)
are skipped there.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

PRIVATE_FILE_MODE = 0o600
PRIVATE_FOLDER_MODE = 0o700
# Windows has neither mode bits beyond read-only nor folders that can be opened and fsynced.
POSIX_MODES = os.name == "posix"


def write_atomically(target: Path, data: bytes) -> None:
    """Replace `target` with `data` (mode 0600): temporary file in the same folder, fsync,
    rename over the target, fsync the folder. A crash leaves `<stem>.*.tmp` behind at most."""
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f"{target.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if POSIX_MODES:
                os.fchmod(f.fileno(), PRIVATE_FILE_MODE)  # a umask like 0277 narrows mkstemp's 0600
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    fsync_dir(target.parent)


def make_private_folder(path: Path, tighten_existing: bool) -> None:
    """Create `path` with mode 0700 (its parent must exist); an existing folder is made 0700
    only when `tighten_existing` (a shared parent volume is left alone)."""
    try:
        os.mkdir(path, PRIVATE_FOLDER_MODE)
    except FileExistsError:
        if POSIX_MODES and tighten_existing and stat.S_IMODE(os.stat(path).st_mode) != PRIVATE_FOLDER_MODE:
            os.chmod(path, PRIVATE_FOLDER_MODE)
        return
    if POSIX_MODES:
        os.chmod(path, PRIVATE_FOLDER_MODE)  # mkdir's mode is still subject to the umask
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in `path` durable. On Windows NTFS journals the folder's
    metadata itself, and a folder cannot be opened for fsync."""
    if not POSIX_MODES:
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
