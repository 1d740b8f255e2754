"""Signs in to a real IMAP (implicit TLS) or SMTP submission (STARTTLS) upstream with the
proxy's own upstream code, on the real reactor, once
per name given, reusing one UpstreamTarget (as a listener does), and prints one JSON line per
login: whether it succeeded, whether its TLS session was resumed, the error otherwise.

    python -m tests.support.upstream_probe [--smtp] --port P --ca CA.pem --mailbox M NAME [NAME ...]

The access token comes on standard input. Each NAME is the host name the certificate must
carry at that login (the connection always goes to --address): a name the certificate lacks
shows whether a resumed session is still checked.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from OpenSSL import SSL
from OpenSSL._util import lib as openssl  # SSL_session_reused: pyOpenSSL does not wrap it
from twisted.internet import defer, task

from proxy.errors import ProxyError
from proxy.glue.upstream_connection import UpstreamTarget, connect_upstream
from proxy.imap.upstream import ImapUpstreamLogin
from proxy.smtp.upstream import SmtpUpstreamLogin


def session_resumed(connection: SSL.Connection) -> bool:
    """Whether the handshake resumed an earlier session (OpenSSL's own answer)."""
    return bool(openssl.SSL_session_reused(connection._ssl))


async def _probe(reactor: Any, args: argparse.Namespace, token: str) -> None:
    # SMTP: plain TCP first, then STARTTLS, as for a `tcp:HOST:587` upstream.
    target = UpstreamTarget(args.address, args.port, not args.smtp, args.ca)
    tls = target.tls_options
    check_peer = tls.check_peer
    seen: dict[str, bool] = {}

    def recording_check(connection: SSL.Connection) -> None:
        seen["resumed"] = session_resumed(connection)
        check_peer(connection)

    tls.check_peer = recording_check  # type: ignore[method-assign]
    for name in args.names:
        tls.hostname = name
        seen.clear()
        try:
            signed_in = await connect_upstream(
                reactor, target, lambda: SmtpUpstreamLogin(args.mailbox, token) if args.smtp
                else ImapUpstreamLogin(args.mailbox, token))
        except ProxyError as e:
            print(json.dumps({"ok": False, "resumed": seen.get("resumed"), "error": e.message}))
        else:
            print(json.dumps({"ok": True, "resumed": seen.get("resumed")}))
            signed_in.close()
        sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--smtp", action="store_true", help="submission with STARTTLS")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ca", type=Path, required=True)
    parser.add_argument("--mailbox", required=True)
    parser.add_argument("names", nargs="+")
    args = parser.parse_args()
    token = sys.stdin.readline().strip()
    task.react(lambda reactor: defer.Deferred.fromCoroutine(_probe(reactor, args, token)))


if __name__ == "__main__":
    main()
