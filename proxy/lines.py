"""A byte buffer that hands out CRLF-terminated lines and raw byte runs, with a hard line cap.

Every front and upstream core reads through one of these, so the cap, the tolerance for a bare LF
(some printers send one) and "what is left over when the relay starts" are decided in one place.
"""

from __future__ import annotations


class LineTooLong(Exception):
    """A line exceeded the limit before its end arrived."""


class LineBuffer:
    def __init__(self, max_line: int = 8192) -> None:
        self.max_line = max_line
        self._buffer = bytearray()
        self._skipping = False  # inside an overlong line, dropping bytes until its end

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def next_line(self) -> bytes | None:
        """The next line without its line ending, or None until one is complete.

        Raises LineTooLong once when more than `max_line` bytes arrive without a line ending;
        the rest of that line is then dropped as it arrives and reading resumes after it, so a
        caller may answer with an error and go on (or close the connection).
        """
        if self._skipping and not self._skip_to_line_end():
            return None
        end = self._buffer.find(b"\n", 0, self.max_line + 2)
        if end < 0:
            if len(self._buffer) > self.max_line + 1:
                self._skipping = True
                self._skip_to_line_end()
                raise LineTooLong()
            return None
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        line = line[:-1] if line.endswith(b"\r") else line
        if len(line) > self.max_line:  # a bare LF gets no allowance for the CR it lacks
            raise LineTooLong()
        return line

    def _skip_to_line_end(self) -> bool:
        end = self._buffer.find(b"\n")
        if end < 0:
            self._buffer.clear()
            return False
        del self._buffer[: end + 1]
        self._skipping = False
        return True

    def next_bytes(self, count: int) -> bytes | None:
        """Exactly `count` raw bytes (an IMAP literal), or None until they have all arrived."""
        if len(self._buffer) < count:
            return None
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        return data

    def take_unparsed(self) -> bytes:
        """Everything still buffered; the buffer is empty afterwards."""
        data = bytes(self._buffer)
        self._buffer.clear()
        return data

    def __len__(self) -> int:
        return len(self._buffer)
