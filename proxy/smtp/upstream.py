"""Signing in to the upstream SMTP submission server with XOAUTH2, sans-I/O.

Banner, EHLO, STARTTLS (always, on a plain-TCP upstream), EHLO again over TLS, then
`AUTH XOAUTH2` in the two-step form: Dovecot's submission service refuses command lines over
about 1 KB and Entra access tokens are 1.5-2.5 KB, and Microsoft documents this form too.

Every failure is temporary for the device (FailureKind.TEMPORARY): its local password was right,
and a "wrong password" answer would make many printers forget it. Error texts quote the server
but never the token or the XOAUTH2 string.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
from dataclasses import dataclass

from .. import sasl
from ..actions import Close, LoggedIn, LoginRefused, Send, StartTLS, UpstreamAction
from ..errors import ProxyError, Throttled, UpstreamRejected, UpstreamUnavailable
from ..lines import LineBuffer, LineTooLong
from .session import one_line

_MAX_QUOTE = 200  # how much of a server reply an error message quotes


class _Step(enum.Enum):
    BANNER = "banner"
    EHLO = "EHLO"
    STARTTLS = "STARTTLS"
    AUTH = "AUTH XOAUTH2"
    TOKEN = "XOAUTH2 response"
    FAILURE_DETAIL = "XOAUTH2 failure detail"
    DONE = "logged in"
    FAILED = "failed"


@dataclass(frozen=True)
class Reply:
    """One complete (possibly multi-line) SMTP reply."""

    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(line for line in self.lines if line)


class MalformedReply(Exception):
    """The server sent something that is not an SMTP reply."""


def _parse_reply_line(raw: bytes) -> tuple[int, bool, str]:
    """(code, is_last_line, text) of one reply line."""
    head, separator = raw[:3], raw[3:4]
    if len(head) != 3 or not head.isdigit() or separator not in (b"", b" ", b"-"):
        raise MalformedReply("not an SMTP reply line")
    return int(head), separator != b"-", raw[4:].decode("utf-8", "replace")


def _has_keyword(capabilities: tuple[str, ...], keyword: str) -> bool:
    return any(cap.split(maxsplit=1)[:1] == [keyword] for cap in _upper(capabilities))


def _offers_xoauth2(capabilities: tuple[str, ...]) -> bool:
    for cap in _upper(capabilities):
        words = cap.replace("=", " ", 1).split()  # "AUTH=LOGIN XOAUTH2" is the old form
        if words[:1] == ["AUTH"] and "XOAUTH2" in words[1:]:
            return True
    return False


def _upper(capabilities: tuple[str, ...]) -> list[str]:
    return [cap.upper() for cap in capabilities if cap.strip()]


def _challenge_detail(reply: Reply) -> str:
    """Dovecot and Gmail explain a refused token in a base64 JSON challenge; show it."""
    try:
        decoded = json.loads(base64.b64decode(reply.text.strip(), validate=True))
    except (binascii.Error, ValueError):
        return ""
    return json.dumps(decoded, separators=(",", ":"))


class SmtpUpstreamLogin:
    """UpstreamLogin for SMTP submission (see proxy.actions.UpstreamLogin)."""

    def __init__(
        self,
        mailbox: str,
        access_token: str,
        *,
        ehlo_name: str = "xoauth2-proxy",
        starttls: bool = True,
        max_line: int = 4096,
    ) -> None:
        self.mailbox = mailbox
        self.ehlo_name = ehlo_name
        self.starttls = starttls
        self._xoauth2 = sasl.xoauth2(mailbox, access_token)
        self._access_token = access_token
        self._lines = LineBuffer(max_line)
        self._pending: list[str] = []  # texts of the reply lines read so far
        self._step = _Step.BANNER
        self._tls_started = False
        self._capabilities: tuple[str, ...] = ()
        self._failure_detail = ""

    def __repr__(self) -> str:  # the default would be harmless, but say it: no token here
        return f"SmtpUpstreamLogin(mailbox={self.mailbox!r}, step={self._step.value!r})"

    # -- UpstreamLogin --

    def receive_data(self, data: bytes) -> list[UpstreamAction]:
        if self._step is _Step.FAILED:
            return []
        self._lines.feed(data)  # after DONE these bytes belong to the client: take_unparsed
        actions: list[UpstreamAction] = []
        while self._step not in (_Step.DONE, _Step.FAILED):
            try:
                reply = self._next_reply()
            except (MalformedReply, LineTooLong):
                actions += self._fail(
                    UpstreamUnavailable(
                        f"The mail server sent something that is not an SMTP reply "
                        f"(while waiting for the {self._step.value} answer)"
                    ),
                    polite=False,
                )
                break
            if reply is None:
                break
            actions += self._handle(reply)
        return actions

    def take_unparsed(self) -> bytes:
        return self._lines.take_unparsed()

    # -- the conversation --

    def _next_reply(self) -> Reply | None:
        while (raw := self._lines.next_line()) is not None:
            code, last, text = _parse_reply_line(raw)
            self._pending.append(text)
            if last:
                lines, self._pending = tuple(self._pending), []
                return Reply(code, lines)
        return None

    def _handle(self, reply: Reply) -> list[UpstreamAction]:
        step = self._step
        if step is _Step.BANNER:
            if reply.code != 220:
                return self._fail(self._unavailable("is not accepting connections", reply))
            return self._send_ehlo()
        if step is _Step.EHLO:
            return self._after_ehlo(reply)
        if step is _Step.STARTTLS:
            return self._after_starttls(reply)
        if step is _Step.AUTH:
            if reply.code != 334:
                return self._fail(self._refusal(reply))
            self._step = _Step.TOKEN
            return [Send(self._xoauth2 + b"\r\n")]
        if step is _Step.TOKEN and reply.code == 334:
            # Dovecot and Gmail explain the refusal in a challenge and wait for an empty
            # response before sending the final 5xx.
            self._failure_detail = self._redact(one_line(_challenge_detail(reply)))[:_MAX_QUOTE]
            self._step = _Step.FAILURE_DETAIL
            return [Send(b"\r\n")]
        # _Step.TOKEN or _Step.FAILURE_DETAIL: the final answer to the XOAUTH2 response.
        if reply.code == 235:
            self._step = _Step.DONE
            return [LoggedIn(self._capabilities)]
        return self._fail(self._refusal(reply))

    def _send_ehlo(self) -> list[UpstreamAction]:
        self._step = _Step.EHLO
        return [Send(f"EHLO {self.ehlo_name}\r\n".encode())]

    def _after_ehlo(self, reply: Reply) -> list[UpstreamAction]:
        if reply.code != 250:
            return self._fail(self._unavailable("refused EHLO", reply))
        capabilities = tuple(line.strip() for line in reply.lines[1:] if line.strip())
        if self.starttls and not self._tls_started:
            # Never go on in clear: the next thing sent would be the access token.
            if not _has_keyword(capabilities, "STARTTLS"):
                return self._fail(UpstreamUnavailable("The mail server does not offer STARTTLS"))
            self._step = _Step.STARTTLS
            return [Send(b"STARTTLS\r\n")]
        # RFC 3207: what was said before TLS is forgotten; only this list counts.
        self._capabilities = capabilities
        if not _offers_xoauth2(capabilities):
            return self._fail(
                UpstreamUnavailable("The mail server does not offer AUTH XOAUTH2 (SASL XOAUTH2)")
            )
        self._step = _Step.AUTH
        return [Send(b"AUTH XOAUTH2\r\n")]

    def _after_starttls(self, reply: Reply) -> list[UpstreamAction]:
        if reply.code != 220:
            return self._fail(self._unavailable("refused STARTTLS", reply))
        if len(self._lines):
            # Bytes that arrived in clear after the 220 would be read as if they came over
            # TLS: the STARTTLS injection attack (CVE-2011-0411 and kin). Refuse the server.
            return self._fail(
                UpstreamUnavailable("The mail server sent data after its STARTTLS answer"),
                polite=False,
            )
        self._tls_started = True
        return [StartTLS(), *self._send_ehlo()]

    # -- failures --

    def _fail(self, error: ProxyError, *, polite: bool = True) -> list[UpstreamAction]:
        self._step = _Step.FAILED
        self._lines.take_unparsed()
        farewell: list[UpstreamAction] = [Send(b"QUIT\r\n")] if polite else []
        return [*farewell, Close(), LoginRefused(error)]

    def _redact(self, text: str) -> str:
        return sasl.without_credentials(text, self._access_token, self._xoauth2)

    def _quote(self, reply: Reply) -> str:
        return one_line(self._redact(f"{reply.code} {reply.text}"))[:_MAX_QUOTE]

    def _unavailable(self, what: str, reply: Reply) -> ProxyError:
        if reply.code // 100 == 4 and "throttl" in reply.text.lower():
            return Throttled(f"The mail server is throttling requests: {self._quote(reply)}")
        return UpstreamUnavailable(f"The mail server {what}: {self._quote(reply)}")

    def _refusal(self, reply: Reply) -> ProxyError:
        """What a non-success answer to AUTH XOAUTH2 or to the token means for the admin."""
        if reply.code // 100 != 5:
            # 4xx (454 temporary auth failure, 421 shutting down, 451 throttled) and oddities.
            return self._unavailable("could not sign in now", reply)
        quoted = self._quote(reply)
        if "smtpclientauthentication" in reply.text.lower():
            # 5.7.139: the token is fine, but SMTP AUTH is switched off for the tenant or the
            # mailbox. Still TEMPORARY for the device (its password was right, and a 535 would
            # make it forget it); the text tells the admin the exact fix.
            return UpstreamRejected(
                f"Microsoft 365 has authenticated SMTP switched off for {self.mailbox}; an"
                f" administrator must enable it: Set-CASMailbox -Identity {self.mailbox}"
                f" -SmtpClientAuthenticationDisabled $false (or allow it for the whole tenant)."
                f" Server said: {quoted}"
            )
        detail = f"; challenge {self._failure_detail}" if self._failure_detail else ""
        # The advice comes before the quote: the device's reply line may be cut at the end.
        return UpstreamRejected(
            f"The mail server refused the XOAUTH2 sign-in for {self.mailbox}; the administrator"
            f" should run: xoauth2-proxy account check. Server said: {quoted}{detail}"
        )
