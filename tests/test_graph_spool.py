"""proxy.spool.MessageSpool: small in memory, large in a private unnamed file, gone when done."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from proxy.spool import MessageSpool


def open_descriptors_to(folder: Path) -> list[str]:
    """Targets of this process's open file descriptors inside `folder`."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(folder)):
            found.append(target)
    return found


def test_small_message_stays_in_memory(tmp_path: Path) -> None:
    """Below the in-memory size nothing touches the disk, and the bytes read back whole."""
    with MessageSpool(limit=1000, in_memory=100, folder=str(tmp_path)) as spool:
        assert spool.write(b"x" * 60) and spool.write(b"y" * 40)
        assert not spool.on_disk and spool.file_mode() is None
        assert spool.reader().read() == b"x" * 60 + b"y" * 40
        assert open_descriptors_to(tmp_path) == []


def test_large_message_goes_to_a_private_unnamed_file(tmp_path: Path) -> None:
    """Past the in-memory size the message is in a 0600 file that has no name in the folder."""
    spool = MessageSpool(limit=10_000_000, in_memory=1000, folder=str(tmp_path))
    for _ in range(100):
        spool.write(os.urandom(10_000))
    assert spool.on_disk and spool.file_mode() == 0o600
    assert os.listdir(tmp_path) == []  # nothing to leave behind, whatever happens next
    assert len(open_descriptors_to(tmp_path)) == 1
    assert len(spool.reader().read()) == 1_000_000
    spool.close()
    assert spool.closed and open_descriptors_to(tmp_path) == []


def test_reader_rewinds_and_later_writes_append(tmp_path: Path) -> None:
    """Each reader() starts at the first byte, even after a partial read; writes still append."""
    with MessageSpool(limit=100, in_memory=4, folder=str(tmp_path)) as spool:
        spool.write(b"abcdef")
        assert spool.reader().read(2) == b"ab"
        spool.write(b"gh")
        assert spool.reader().read() == b"abcdefgh"


def test_over_the_limit_is_counted_not_kept(tmp_path: Path) -> None:
    """Past the limit write() says no, the size keeps counting and the kept bytes are dropped."""
    with MessageSpool(limit=5000, in_memory=100, folder=str(tmp_path)) as spool:
        assert spool.write(b"a" * 4000)
        assert not spool.write(b"b" * 2000) and not spool.write(b"c")
        assert spool.over_limit and spool.size == 6001
        assert os.fstat(spool._file.fileno()).st_size == 0
        with pytest.raises(ValueError):
            spool.reader()


def test_nothing_is_left_when_the_process_is_killed(tmp_path: Path) -> None:
    """A process killed (SIGKILL) while holding a spooled message leaves no file behind."""
    script = textwrap.dedent(f"""
        import sys
        from proxy.spool import MessageSpool
        spool = MessageSpool(limit=10**8, in_memory=1000, folder={str(tmp_path)!r})
        spool.write(b"secret scan " * 100_000)
        assert spool.on_disk
        print("spooled", flush=True)
        sys.stdin.read()
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, cwd=Path(__file__).parent.parent)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"spooled\n"
        assert os.listdir(tmp_path) == []
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert os.listdir(tmp_path) == []
