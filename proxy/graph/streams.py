"""Request bodies streamed from the spool, so no message or attachment is ever held whole.

`StreamBody` is a file-like body of known length: `requests` sends it with a Content-Length,
reading a few kilobytes at a time. Base64 is produced on the way (`base64_chunks`): a sendMail
body is the base64 of the message, and an attachment's JSON holds its base64 in contentBytes.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Iterator

BLOCK = 48 * 1024  # a multiple of 3, so base64 of consecutive blocks joins up without padding


def base64_length(size: int) -> int:
    return 4 * ((size + 2) // 3)


def base64_chunks(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Base64 of the concatenated chunks, without line breaks, in pieces."""
    carry = b""
    for chunk in chunks:
        data = carry + chunk
        cut = len(data) - len(data) % 3
        if cut:
            yield base64.b64encode(data[:cut])
        carry = data[cut:]
    if carry:
        yield base64.b64encode(carry)


class StreamBody:
    """A request body read from `pieces`, which must add up to exactly `length` bytes."""

    def __init__(self, pieces: Iterable[bytes], length: int) -> None:
        self._pieces = iter(pieces)
        self._length = length
        self._buffer = b""

    def __len__(self) -> int:
        return self._length

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            piece = next(self._pieces, b"")
            if not piece:
                break
            self._buffer += piece
        if size < 0:
            size = len(self._buffer)
        out, self._buffer = self._buffer[:size], self._buffer[size:]
        return out

    def __iter__(self) -> Iterator[bytes]:
        while piece := self.read(BLOCK):
            yield piece

    def take(self, size: int) -> Iterator[bytes]:
        """The next `size` bytes (fewer at the end), in pieces: one upload range."""
        while size > 0:
            piece = self.read(min(size, BLOCK))
            if not piece:
                return
            size -= len(piece)
            yield piece
