"""Text from elsewhere (an error message, a server's answer) made safe to echo.

Whatever a core puts into an answer to a device, an error message or a log line goes through
`one_line` first, so one guarantee holds everywhere: a CR or LF cannot forge a protocol line or
a log entry, no control or bidi character reaches a terminal, and the length is bounded. Where a
protocol limits a line in bytes (POP3: 512), `clip` cuts the encoded line without splitting a
character. SMTP replies must be ASCII as well: that is done where they are formatted
(proxy.smtp.replies).
"""

from __future__ import annotations

CUT = "..."


def one_line(text: str, limit: int = 400) -> str:
    """`text` on one line: every character that does not print (CR, LF and other controls,
    bidi overrides, line separators) becomes a space, each run of spaces one space, none at
    either end; over `limit` characters it is cut, and "..." marks the cut."""
    printable = "".join(c if c.isprintable() else " " for c in text)
    cleaned = " ".join(printable.split())
    if len(cleaned) > limit:
        cleaned = cleaned[: max(limit - len(CUT), 0)].rstrip() + CUT
    return cleaned


def clip(line: bytes, limit: int) -> bytes:
    """A UTF-8 `line` in at most `limit` bytes: cut where a character begins, "..." marks the
    cut."""
    if len(line) <= limit:
        return line
    kept = line[: max(limit - len(CUT), 0)].decode("utf-8", "ignore").rstrip()
    return kept.encode() + CUT.encode()
