"""Signing in to the upstream SMTP submission server with XOAUTH2, sans I/O.

Banner, EHLO, STARTTLS (always, on a plain-TCP upstream), EHLO again over TLS, then
`AUTH XOAUTH2` in the two-step form: Dovecot's submission service refuses command lines over
about 1 KB and Entra access tokens are 1.5-2.5 KB, and Microsoft documents this form too.

Every failure is temporary for the device (FailureKind.TEMPORARY): its local password was right,
and a "wrong password" answer would make many printers forget it. The shape (phase, outcome,
quoting that never shows the token) is proxy.upstream_login's.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json

from ..actions import Send, StartTLS, UpstreamAction
from ..errors import ProxyError, Throttled, UpstreamRejected, UpstreamUnavailable
from ..upstream_login import UpstreamLoginBase
from .replies import MalformedReply, Reply, ReplyReader

QUIT = b"QUIT\r\n"


class _Step(enum.Enum):
    """Whose answer the core waits for."""

    BANNER = "banner"
    EHLO = "EHLO"
    STARTTLS = "STARTTLS"
    AUTH = "AUTH XOAUTH2"
    TOKEN = "XOAUTH2 response"
    FAILURE_DETAIL = "XOAUTH2 failure detail"


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


class SmtpUpstreamLogin(UpstreamLoginBase):
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
        super().__init__(mailbox, access_token, max_line=max_line)
        self.ehlo_name = ehlo_name
        self.starttls = starttls
        self._replies = ReplyReader(self._lines)
        self._step = _Step.BANNER
        self._tls_started = False
        self._capabilities: tuple[str, ...] = ()
        self._failure_detail = ""

    # -- the conversation --

    def _advance(self) -> list[UpstreamAction] | None:
        try:
            reply = self._replies.next_reply()
        except MalformedReply:
            return self._refuse(self._unreadable())
        return None if reply is None else self._handle(reply)

    def _unreadable(self) -> ProxyError:
        return UpstreamUnavailable(
            "The mail server sent something that is not an SMTP reply "
            f"(while waiting for the {self._step.value} answer)"
        )

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
            return [Send(self._response + b"\r\n")]
        if step is _Step.TOKEN and reply.code == 334:
            # Dovecot and Gmail explain the refusal in a challenge and wait for an empty
            # response before sending the final 5xx.
            self._failure_detail = self._quote(_challenge_detail(reply))
            self._step = _Step.FAILURE_DETAIL
            return [Send(b"\r\n")]
        # _Step.TOKEN or _Step.FAILURE_DETAIL: the final answer to the XOAUTH2 response.
        if reply.code == 235:
            return self._logged_in(self._capabilities)
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
            return self._refuse(
                UpstreamUnavailable("The mail server sent data after its STARTTLS answer")
            )
        self._tls_started = True
        return [StartTLS(), *self._send_ehlo()]

    # -- failures --

    def _fail(self, error: ProxyError) -> list[UpstreamAction]:
        """Refuse politely: the server still follows the conversation, so say QUIT first."""
        return self._refuse(error, farewell=QUIT)

    def _quote_reply(self, reply: Reply) -> str:
        return self._quote(f"{reply.code} {reply.text}")

    def _unavailable(self, what: str, reply: Reply) -> ProxyError:
        if reply.code // 100 == 4 and "throttl" in reply.text.lower():
            return Throttled(f"The mail server is throttling requests: {self._quote_reply(reply)}")
        return UpstreamUnavailable(f"The mail server {what}: {self._quote_reply(reply)}")

    def _refusal(self, reply: Reply) -> ProxyError:
        """What a non-success answer to AUTH XOAUTH2 or to the token means for the admin."""
        if reply.code // 100 != 5:
            # 4xx (454 temporary auth failure, 421 shutting down, 451 throttled) and oddities.
            return self._unavailable("could not sign in now", reply)
        quoted = self._quote_reply(reply)
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
