"""A device's message while it arrives: in memory while small, then in a private temporary file.

tempfile.SpooledTemporaryFile does exactly that. Past `in_memory` bytes it rolls over to
tempfile.TemporaryFile, which on Linux is an unnamed file (O_TMPFILE) or one unlinked as soon as
it is created, mode 0600: no other user can open it, and it is gone when it is closed or when the
process ends, however it ends. Nothing of a message outlives the session that received it.

A message over `limit` is not kept: the spool counts what keeps arriving (so the session can
answer `552 5.3.4` at the end of DATA) but stores none of it.
"""

from __future__ import annotations

import os
import tempfile
from typing import IO

IN_MEMORY = 256 * 1024  # a typical scan page or text message never touches the disk


class MessageSpool:
    """Bytes of one message, written in pieces and read back from the start."""

    def __init__(self, limit: int, in_memory: int = IN_MEMORY, folder: str | None = None) -> None:
        self.limit = limit
        # Closed by close(): the spool lives as long as the message is needed.
        self._file: tempfile.SpooledTemporaryFile[bytes] = tempfile.SpooledTemporaryFile(  # noqa: SIM115
            max_size=in_memory, mode="w+b", dir=folder
        )
        self._size = 0

    def write(self, data: bytes) -> bool:
        """Append data; False once the message is over the limit (from then on data is only
        counted)."""
        self._size += len(data)
        if self._size > self.limit:
            if self._file.tell():
                self._file.truncate(0)  # let go of what was kept: it will never be sent
                self._file.seek(0)
            return False
        self._file.seek(0, os.SEEK_END)  # a reader may have rewound it
        self._file.write(data)
        return True

    @property
    def size(self) -> int:
        """Bytes written so far, including any over the limit."""
        return self._size

    @property
    def over_limit(self) -> bool:
        return self._size > self.limit

    @property
    def on_disk(self) -> bool:
        """True once the message outgrew memory and went to the temporary file."""
        return bool(getattr(self._file, "_rolled", False))

    def file_mode(self) -> int | None:
        """Permission bits of the temporary file (None while in memory)."""
        if not self.on_disk:
            return None
        return os.fstat(self._file.fileno()).st_mode & 0o777

    def reader(self) -> IO[bytes]:
        """The message from its first byte, for a sender that reads and seeks (it may rewind to
        send again, after a token refresh)."""
        if self.over_limit:
            raise ValueError("the message is over the size limit and was not kept")
        self._file.flush()
        self._file.seek(0)
        return self._file

    def close(self) -> None:
        """Forget the message; the temporary file, if any, is removed now."""
        self._file.close()

    @property
    def closed(self) -> bool:
        return self._file.closed

    def __enter__(self) -> MessageSpool:  # noqa: PYI034 - Self needs Python 3.11
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
