"""A light IMAP server over TLS that accepts XOAUTH2 with the fake Entra ID's tokens and holds
thousands of IDLE sessions, each a small asyncio protocol object.

Dovecot forks a process per session, so a small machine cannot hold thousands of idle sessions
with it; this server stands in as the upstream when a benchmark needs that many. It speaks just
enough IMAP for a proxy's login and an idling client: CAPABILITY, AUTHENTICATE XOAUTH2 (SASL-IR or
a continuation, a failure challenge like Dovecot's), NOOP, SELECT/EXAMINE, IDLE ... DONE, LOGOUT.
Tokens are the HS256 JWTs Dovecot checks, verified with the same key: signature, `exp`, and an
`email` claim equal to the XOAUTH2 user.

    python -m tests.bench.light_imap --port P --cert C --key K --jwt-key-file F
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import signal
import ssl
import time
from pathlib import Path

GREETING = b"* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2 IDLE] light IMAP ready\r\n"
CAPABILITIES = b"* CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2 IDLE\r\n"
# What Dovecot sends before refusing a token (RFC 7628): the client answers with an empty line.
FAILURE_CHALLENGE = b"+ " + base64.b64encode(
    b'{"status":"401","schemes":"bearer","scope":"mail"}'
) + b"\r\n"
MAX_LINE = 16384


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def token_user(key: bytes, xoauth2_b64: bytes, now: float | None = None) -> str | None:
    """The user an XOAUTH2 initial response logs in as, or None if its token is not valid."""
    try:
        fields = base64.b64decode(xoauth2_b64, validate=True).decode().split("\x01")
        if not fields[0].startswith("user="):
            return None
        user = fields[0].removeprefix("user=")
        token = next(f for f in fields if f.startswith("auth=Bearer ")).removeprefix("auth=Bearer ")
        header, payload, signature = token.split(".")
        expected = hmac.new(key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        claims = json.loads(_b64url_decode(payload))
        valid = hmac.compare_digest(expected, _b64url_decode(signature))
    except (binascii.Error, UnicodeDecodeError, StopIteration, ValueError):
        return None
    if not valid or not isinstance(claims, dict) or claims.get("email") != user:
        return None
    if not isinstance(claims.get("exp"), int) or claims["exp"] <= (now or time.time()):
        return None
    return user


class ImapSession(asyncio.Protocol):
    def __init__(self, key: bytes) -> None:
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.user: str | None = None
        self.pending: tuple[str, str] | None = None  # (tag, "token" | "failure") awaiting a line
        self.idling: str | None = None  # tag of the IDLE in progress

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(GREETING)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.transport is not None and not self.transport.is_closing():
            end = self.buffer.find(b"\r\n")
            if end < 0:
                if len(self.buffer) > MAX_LINE:
                    self._send(b"* BYE line too long\r\n")
                    self.transport.close()
                return
            line, self.buffer = self.buffer[:end], self.buffer[end + 2 :]
            self._line(line)

    def _send(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def _line(self, line: bytes) -> None:
        if self.idling is not None:
            if line.upper() == b"DONE":
                self._send(self.idling.encode() + b" OK IDLE terminated\r\n")
                self.idling = None
            return
        if self.pending is not None:
            tag, waiting_for = self.pending
            self.pending = None
            if waiting_for == "token":
                self._authenticate(tag, line)
            else:
                self._send(tag.encode() + b" NO [AUTHENTICATIONFAILED] Authentication failed.\r\n")
            return
        parts = line.decode("utf-8", "replace").split(" ")
        tag, verb, args = parts[0], (parts[1].upper() if len(parts) > 1 else ""), parts[2:]
        reply = tag.encode()
        if verb == "CAPABILITY":
            self._send(CAPABILITIES + reply + b" OK CAPABILITY completed\r\n")
        elif verb == "NOOP":
            self._send(reply + b" OK NOOP completed\r\n")
        elif verb == "LOGOUT":
            self._send(b"* BYE Logging out\r\n" + reply + b" OK Logout completed\r\n")
            assert self.transport is not None
            self.transport.close()
        elif verb == "AUTHENTICATE" and self.user is None and args[:1] and args[0].upper() == "XOAUTH2":
            if len(args) > 1:
                self._authenticate(tag, args[1].encode())
            else:
                self.pending = (tag, "token")
                self._send(b"+ \r\n")
        elif self.user is None:
            self._send(reply + b" BAD Log in first\r\n")
        elif verb in ("SELECT", "EXAMINE"):
            self._send(b"* 0 EXISTS\r\n* 0 RECENT\r\n* FLAGS (\\Seen)\r\n"
                       b"* OK [UIDVALIDITY 1] UIDs valid\r\n" + reply + b" OK [READ-WRITE] done\r\n")
        elif verb == "IDLE":
            self.idling = tag
            self._send(b"+ idling\r\n")
        else:
            self._send(reply + b" BAD Unknown command\r\n")

    def _authenticate(self, tag: str, response: bytes) -> None:
        user = token_user(self.key, response)
        if user is None:
            self.pending = (tag, "failure")
            self._send(FAILURE_CHALLENGE)
            return
        self.user = user
        self._send(f"{tag} OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n".encode())

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def serve(port: int, cert: Path, key_file: Path, jwt_key: bytes) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key_file)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: ImapSession(jwt_key), "127.0.0.1", port, ssl=context, backlog=4096,
        reuse_address=True,
    )
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", type=Path, required=True)
    parser.add_argument("--key", type=Path, required=True)
    parser.add_argument("--jwt-key-file", type=Path, required=True, help="the HMAC key, raw bytes")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port, args.cert, args.key, args.jwt_key_file.read_bytes()))


if __name__ == "__main__":
    main()
