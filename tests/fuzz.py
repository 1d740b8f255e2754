"""Fuzzing the pre-login parsers (IMAP, POP3, SMTP front sessions), the upstream login cores,
the SMTP receiving core of Graph listeners (its targets and rules: tests/fuzz_receiving.py) and
the PROXY header glue of listeners behind a load balancer (rules in tests/fuzz_balancer.py).

    .venv/bin/python -m tests.fuzz --seconds 60              # every target, until time is up
    .venv/bin/python -m tests.fuzz --seconds 600 --target imap-literals
    .venv/bin/python -m tests.fuzz --replay crash-...        # rerun a saved input, with a trace
                       (give --replay the same --target as the run that saved it)

Uses atheris (coverage-guided libFuzzer) when it can be imported (`pip install atheris`; it is not
a project dependency), hypothesis otherwise (`--engine` chooses). atheris saves a failing input
under /tmp/xoauth2-proxy-fuzz/; `--replay` runs it again. CI runs a bounded version of the same
targets: tests/test_parsers_fuzz.py.

Every target turns the fuzz input into a script (bytes from the client or the server, in random
pieces, with login outcomes) and runs it against the sans-I/O core, checking after each call:
  - no exception, and bounded work per input (SLOW_INPUT seconds at most);
  - every Send is whole CRLF lines (POP3 and SMTP lines at most 512 bytes), and no text from an
    error message can start a line of its own;
  - a front asks for Login only with a non-empty user name and password it received, never
    before TLS where TLS is required, and never twice without an outcome in between; it answers
    nothing while a login is pending and nothing after Close or Relay; what it leaves for the
    relay is a suffix of its input;
  - the front's public phase agrees with what it said (READING, LOGGING_IN, CLOSED, RELAYING);
  - IMAP literal data is never taken as a command: in a well-behaved client's conversation
    (literals sent only after `+`, or as LITERAL+), no answer ever carries a tag that only
    appeared inside literal data, and no Login uses a user name that only appeared there;
  - an upstream core sends the token at most once (SMTP: never before STARTTLS), emits exactly
    zero or one outcome and nothing after it, closes when and only when refusing, its public
    phase agrees with its outcome, and it never quotes the token or the XOAUTH2 string in an
    error;
  - the admin page's parsers of outside input: rules in tests/fuzz_admin.py.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import re
import sys
import time
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path


def _instrumented_imports() -> contextlib.AbstractContextManager[object]:
    """Run as the fuzz command with atheris at hand, the proxy's modules are imported with
    coverage instrumentation (only them: instrumenting everything takes half a minute)."""
    plain = any("hypothesis" in arg or arg.startswith("--replay") for arg in sys.argv)
    if __name__ == "__main__" and not plain:
        try:
            import atheris
        except ImportError:
            pass
        else:
            return typing.cast(contextlib.AbstractContextManager[object],
                               atheris.instrument_imports(include=["proxy"]))
    return contextlib.nullcontext()


with _instrumented_imports():
    from proxy.actions import (
        Close,
        LoggedIn,
        Login,
        LoginRefused,
        Phase,
        Relay,
        Send,
        SignInPhase,
        StartTLS,
    )
    from proxy.errors import (
        NeedsReauthorisation,
        ProxyError,
        TemporaryFailure,
        Throttled,
        WrongPassword,
    )
    from proxy.imap.device import ImapSession
    from proxy.imap.upstream import ImapUpstreamLogin
    from proxy.pop3.device import Pop3Session
    from proxy.pop3.upstream import Pop3UpstreamLogin
    from proxy.sasl import xoauth2
    from proxy.smtp.device import SmtpSession
    from proxy.smtp.upstream import SmtpUpstreamLogin
    from tests.fuzz_balancer import run_balancer
    from tests.support.playbook import b64

SLOW_INPUT = 2.0  # seconds; a parser taking longer on a few KB is hanging
MAX_LEN = 4096  # bytes of fuzz input
ARTIFACTS = Path("/tmp/xoauth2-proxy-fuzz")


class InvariantViolation(AssertionError):
    """A core broke one of the rules in this module's docstring."""


def require(condition: bool, message: str, *context: object) -> None:
    if not condition:
        raise InvariantViolation(" ".join([message, *(repr(c) for c in context)]))


# -- turning fuzz bytes into choices ------------------------------------------------------------


class ByteReader:
    """Decodes a fuzz input into choices; an exhausted input reads as zeros."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    @property
    def exhausted(self) -> bool:
        return self.pos >= len(self.data)

    def below(self, n: int) -> int:
        value = self.data[self.pos] if self.pos < len(self.data) else 0
        self.pos += 1
        if n > 256:
            value = value << 8 | (self.data[self.pos] if self.pos < len(self.data) else 0)
            self.pos += 1
        return value % n

    def flag(self) -> bool:
        return self.below(2) == 1

    def choice(self, options: Sequence[bytes]) -> bytes:
        return options[self.below(len(options))]

    def raw(self, most: int) -> bytes:
        count = self.below(most + 1)
        data = self.data[self.pos : self.pos + count]
        self.pos += count
        return data

    def pieces(self, data: bytes) -> list[bytes]:
        """`data` cut into 1 to 4 pieces at places the input chooses."""
        cuts = sorted({self.below(len(data) + 1) for _ in range(self.below(4))}) if data else []
        bounds = [0, *cuts, len(data)]
        return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a] or [data]


USER = "alice@contoso.example"
SECRET = 'pw "q" \\ é'  # needs quoting in IMAP, has spaces for POP3 PASS, is not ASCII
PLAIN = b64(f"\0{USER}\0{SECRET}")
INJECTED = b"INJECTED"  # starts a line in an error message; must never start an answer line
FRAGMENTS = (b"{", b"}", b"+}", b"{3}", b"{2+}", b"\r", b"\n", b"\r\n", b" ", b'"', b"\\", b"(",
             b")", b"\x00", b"\xff\xfe", b"NIL", b"=", b"*", "é".encode(), b"\t")

IMAP_LINES = (
    b"a1 LOGIN alice@contoso.example pw1\r\n",
    b'a2 LOGIN "alice@contoso.example" "pw \\"q\\" \\\\ 2"\r\n',
    b"a3 LOGIN alice {3}\r\n", b"pw3\r\n",
    b"a4 LOGIN {5+}\r\nalice {3+}\r\npw4\r\n",
    b"a5 AUTHENTICATE PLAIN\r\n", PLAIN + b"\r\n",
    b"a6 AUTHENTICATE PLAIN " + PLAIN + b"\r\n",
    b"a7 AUTHENTICATE LOGIN\r\n", b64(USER) + b"\r\n", b64(SECRET) + b"\r\n",
    b"a8 authenticate login " + b64(USER) + b"\r\n",
    b"*\r\n", b"=\r\n", b"a9 STARTTLS\r\n", b"b1 CAPABILITY\r\n", b"b2 NOOP\r\n",
    b"b3 LOGOUT\r\n", b"b4 ID NIL\r\n", b'b5 ID ("name" "x")\r\n', b"b6 SELECT INBOX\r\n",
    b"b7 AUTHENTICATE XOAUTH2\r\n", b"b8 LOGIN\r\n", b"b9 LOGIN a\r\n", b"c1 LOGIN (a) b\r\n",
    b"c2 LOGIN NIL NIL\r\n", b"c3 LOGIN {99999999999999999999}\r\n", b"c4 LOGIN {70000+}\r\n",
    b"c5 LOGIN a {0}\r\n", b'c6 LOGIN "unterminated\r\n', b'c7 LOGIN a "b\\x"\r\n',
    b"((((((((((\r\n", b"+\r\n", b"\r\n", b"\n", b"c8 UID FETCH 1 (BODY[])\r\n",
    b"c9 login alice pw9\r\n", b"d1 AUTHENTICATE PLAIN =\r\n", b"d2 LOGIN a b c\r\n",
)
POP3_LINES = (
    b"USER alice@contoso.example\r\n", b"PASS " + SECRET.encode() + b"\r\n", b"USER\r\n",
    b"PASS\r\n", b"AUTH\r\n", b"AUTH PLAIN\r\n", PLAIN + b"\r\n", b"AUTH PLAIN " + PLAIN + b"\r\n",
    b"AUTH PLAIN =\r\n", b"AUTH LOGIN\r\n", b"auth login " + b64(USER) + b"\r\n",
    b64(USER) + b"\r\n", b64(SECRET) + b"\r\n", b"*\r\n", b"CAPA\r\n", b"STLS\r\n", b"QUIT\r\n",
    b"STAT\r\n", b"APOP alice 0123\r\n", b"AUTH XOAUTH2\r\n", b"AUTH PLAIN a b\r\n", b"RETR 1\r\n",
    b"user alice\r\n", b"pass pw\r\n", b"\r\n", b"PASS  \r\n",
)
SMTP_LINES = (
    b"EHLO printer\r\n", b"HELO printer\r\n", b"EHLO\r\n", b"AUTH PLAIN\r\n", PLAIN + b"\r\n",
    b"AUTH PLAIN " + PLAIN + b"\r\n", b"AUTH PLAIN =\r\n", b"AUTH LOGIN\r\n",
    b"auth login " + b64(USER) + b"\r\n", b64(USER) + b"\r\n", b64(SECRET) + b"\r\n",
    b"*\r\n", b"STARTTLS\r\n", b"MAIL FROM:<a@b>\r\n", b"RCPT TO:<c@d>\r\n", b"DATA\r\n",
    b"BDAT 10 LAST\r\n", b"RSET\r\n", b"NOOP\r\n", b"QUIT\r\n", b"VRFY x\r\n", b"HELP\r\n",
    b"AUTH CRAM-MD5\r\n", b"AUTH\r\n", b"AUTH PLAIN a b c\r\n", b"\r\n",
    b"EHLO printer\r\nAUTH PLAIN " + PLAIN + b"\r\n",
    b"HELO printer\r\nAUTH LOGIN\r\n" + b64(USER) + b"\r\n" + b64(SECRET) + b"\r\n",
)

OUTCOMES: tuple[Callable[[], LoggedIn | ProxyError], ...] = (
    lambda: LoggedIn(("IMAP4rev1", "IDLE", "AUTH=PLAIN", "SASL-IR")),  # atoms, as parsed
    lambda: TemporaryFailure("The server said:\r\nINJECTED OK and more"),
    WrongPassword,
    lambda: NeedsReauthorisation(USER, "AADSTS700082\nINJECTED"),
    lambda: Throttled("slow down\r" + "x" * 600),
)


# -- the front sessions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FrontKind:
    lines: tuple[bytes, ...]
    make: Callable[..., typing.Any]
    line_limit: int | None  # longest answer line, CRLF included


FRONTS = {
    "imap": FrontKind(IMAP_LINES, ImapSession, None),
    "pop3": FrontKind(POP3_LINES, Pop3Session, 512),
    "smtp": FrontKind(SMTP_LINES, SmtpSession, 512),
}


def check_lines(data: bytes, line_limit: int | None = None) -> list[bytes]:
    """Whole CRLF lines, none starting with INJECTED; returns them without their CRLF."""
    require(data.endswith(b"\r\n"), "a Send that does not end in CRLF", data)
    lines = data[:-2].split(b"\r\n")
    for line in lines:
        require(b"\r" not in line and b"\n" not in line, "a bare CR or LF in a Send", data)
        require(not line.startswith(INJECTED), "error text started a line of its own", data)
        if line_limit is not None:
            require(len(line) + 2 <= line_limit, f"an answer line over {line_limit} bytes", line)
    return lines


def _decodings(data: bytes) -> list[bytes]:
    """The input itself, without IMAP quoting escapes, and every token of it that is base64."""
    found = [data, data.replace(b"\\", b"")]
    for token in re.split(rb"\s+", data):
        with contextlib.suppress(binascii.Error, ValueError):
            found.append(base64.b64decode(token, validate=True))
    return found


def derivable(text: str, received: bytes) -> bool:
    """Whether `text` (a user name or password) can have come from the client's bytes."""
    encodings = set()
    for codec in ("utf-8", "latin-1"):
        with contextlib.suppress(UnicodeEncodeError):
            encodings.add(text.encode(codec))
    blobs = _decodings(received)
    return any(e in blob or e.replace(b"\\", b"") in blob for e in encodings for blob in blobs)


@dataclass
class FrontRun:
    """Drives one front session, answering each Login at once, and checks every answer."""

    protocol: str
    session: typing.Any
    outcomes: list[Callable[[], LoggedIn | ProxyError]]
    immediate: bool = True  # answer a Login at once, or only when `resolve` is called
    tls: bool = False
    requires_tls: bool = False
    received: bytearray = field(default_factory=bytearray)
    said: list[bytes] = field(default_factory=list)  # every answer line
    logins: list[Login] = field(default_factory=list)
    phase: Phase = Phase.READING  # what the session's answers say it should be
    unparsed: bytes | None = None  # what was left for the relay

    @property
    def over(self) -> bool:
        return self.phase in (Phase.CLOSED, Phase.RELAYING)

    def start(self) -> None:
        self._take(self.session.start(), "start")

    def feed(self, data: bytes) -> None:
        if self.over or not data:
            return
        self.received += data
        actions = self.session.receive_data(data)
        if self.phase is Phase.LOGGING_IN:
            require(actions == [], "answered while a login was pending", actions)
        self._take(actions, "receive_data")

    def resolve(self) -> None:
        """Give the pending login its outcome (and, when immediate, any pipelined one after it)."""
        while self.phase is Phase.LOGGING_IN:
            outcome = (self.outcomes.pop(0) if self.outcomes else TemporaryFailure)()
            self.phase = Phase.READING  # until the answer says otherwise
            if isinstance(outcome, LoggedIn):
                self._check(self.session.login_succeeded(outcome), "login_succeeded")
            else:
                self._check(self.session.login_failed(outcome), "login_failed")
            if not self.immediate:
                return

    def _take(self, actions: list[typing.Any], origin: str) -> None:
        self._check(actions, origin)
        if self.immediate:
            self.resolve()

    def _check(self, actions: list[typing.Any], origin: str) -> None:
        kind = FRONTS[self.protocol]
        for i, action in enumerate(actions):
            last = i == len(actions) - 1
            require(not self.over, "an action after Close or Relay", actions)
            if isinstance(action, Send):
                self.said += check_lines(action.data, kind.line_limit)
            elif isinstance(action, Close):
                require(last, "actions after Close", actions)
                self.phase = Phase.CLOSED
            elif isinstance(action, Relay):
                require(last and origin == "login_succeeded", "Relay out of place", origin, actions)
                self.phase = Phase.RELAYING
                self.unparsed = self.session.take_unparsed()
                require(bytes(self.received).endswith(self.unparsed), "relayed bytes not a suffix "
                        "of the input", self.unparsed)
            elif isinstance(action, StartTLS):
                require(not self.tls, "StartTLS twice")
                self.tls = True
            elif isinstance(action, Login):
                require(last, "actions after Login", actions)
                require(self.phase is Phase.READING, "Login while", self.phase)
                require(origin in ("receive_data", "login_failed"), "Login from", origin)
                require(bool(action.username) and bool(action.password), "empty credentials",
                        action.username)
                received = bytes(self.received)
                require(derivable(action.username, received), "a user name the client never "
                        "sent", action.username)
                require(derivable(action.password, received), "a password the client never sent")
                require(self.tls or not self.requires_tls, "Login before TLS")
                self.phase = Phase.LOGGING_IN
                self.logins.append(action)
            else:
                raise InvariantViolation(f"unknown action {action!r}")
        phase = self.session.phase
        require(phase is self.phase, f"phase {phase} after the session said {self.phase}")


def _front_options(protocol: str, reader: ByteReader) -> dict[str, typing.Any]:
    starttls, tls_active, requires = reader.flag(), reader.flag(), reader.flag()
    small = reader.flag()
    options: dict[str, typing.Any] = {"starttls": starttls, "tls_active": tls_active,
                                      "login_requires_tls": requires}
    if small:
        options["max_line"] = 64
        if protocol == "imap":
            options["max_literal"] = 100
    return options


def run_front(protocol: str, data: bytes) -> FrontRun:
    """Client bytes from `data` into a fresh front session of `protocol`, checked throughout."""
    started = time.perf_counter()
    reader = ByteReader(data)
    options = _front_options(protocol, reader)
    run = FrontRun(protocol, FRONTS[protocol].make(**options), [], immediate=reader.flag(),
                   tls=options["tls_active"], requires_tls=options["login_requires_tls"])
    run.start()
    pending = bytearray()
    for _ in range(64):
        if reader.exhausted or run.over:
            break
        op = reader.below(8)
        if op <= 1:
            pending += reader.raw(48)
        elif op <= 4:
            pending += reader.choice(FRONTS[protocol].lines)
        elif op == 5:
            fragment = reader.choice(FRAGMENTS)
            pending += b"A" * (64 * reader.below(160)) if fragment == b"\t" else fragment
        elif op == 6:
            run.outcomes.append(OUTCOMES[reader.below(len(OUTCOMES))])
            run.resolve()
        else:
            run.feed(bytes(pending))
            pending.clear()
    for piece in reader.pieces(bytes(pending)):
        run.feed(piece)
    while run.phase is Phase.LOGGING_IN:
        run.resolve()
    require(time.perf_counter() - started < SLOW_INPUT, "slow input")
    return run


# -- IMAP literals from a well-behaved client -------------------------------------------------------

LITERAL_COMMANDS = (  # what literal data looks like: commands with tags found nowhere else
    b"LIT1 LOGOUT\r\n", b"LIT2 LOGIN mallory secret\r\n", b"LIT3 CAPABILITY\r\n",
    b"LIT4 NOOP\r\nLIT5 LOGOUT\r\n", b"LIT6 LOGIN mallory {6}\r\nsecret\r\n",
    b"LIT7 AUTHENTICATE PLAIN " + b64("\0mallory\0secret") + b"\r\n", b"\r\nLIT8 ID NIL\r\n",
    b"LIT9 LOGIN {7+}\r\nmallory {6+}\r\nsecret\r\n",
)


def _literal(reader: ByteReader) -> bytes:
    if reader.flag():
        return reader.choice(LITERAL_COMMANDS)
    return b"".join(reader.choice(LITERAL_COMMANDS) if reader.flag() else reader.raw(12)
                    for _ in range(1 + reader.below(3)))


ATOM = re.compile(rb"[^\x00-\x20\x7f(){%*\"\\]+")


def _argument(reader: ByteReader, text: bytes) -> tuple[bytes, bytes | None, bool]:
    """One argument as a good client writes it: (text before, literal data or None,
    synchronising); an atom or a quoted string only where the text allows it."""
    form = reader.below(4)
    if form <= 1 and (b"\r" in text or b"\n" in text or b"\0" in text):
        form = 2 + form
    if form == 0 and not ATOM.fullmatch(text):
        form = 1
    if form == 0:
        return b" " + text, None, True
    if form == 1:
        return b' "' + text.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"', None, True
    return b" ", text, form == 2


def _imap_command(reader: ByteReader, number: int) -> list[tuple[bytes, bytes | None, bool]]:
    """A command as segments: text, then (optionally) a literal announced at its end."""
    tag = b"c%d" % number
    kind = reader.below(6)
    if kind == 0:
        user = _argument(reader, USER.encode())
        password = _argument(reader, _literal(reader) if reader.flag() else SECRET.encode())
        return [(tag + b" LOGIN", None, True), user, password]
    if kind == 1:
        name = reader.choice((b" NOOP", b" FOO", b" ID", b" SELECT", b" LOGIN a"))
        return [(tag + name, None, True), (b" ", _literal(reader), reader.flag())]
    if kind == 2:
        return [(tag + reader.choice((b" CAPABILITY", b" NOOP", b" ID NIL")), None, True)]
    if kind == 3:
        return [(tag + b" AUTHENTICATE PLAIN " + PLAIN, None, True)]
    if kind == 4:
        return [(tag + b" LOGOUT", None, True)]
    size = 70_000 + reader.below(1000)  # over the cap: refused, so a good client sends nothing
    return [(tag + b" LOGIN a", b"x" * size, reader.flag())]


def run_imap_literals(data: bytes) -> FrontRun:
    """A well-behaved IMAP client's pipelined commands whose literal data looks like commands:
    no answer and no Login may come from inside a literal."""
    started = time.perf_counter()
    reader = ByteReader(data)
    run = FrontRun("imap", ImapSession(max_literal=65536 if reader.flag() else 200), [])
    run.start()
    commands = [_imap_command(reader, n) for n in range(1 + reader.below(6))]
    for _ in range(reader.below(4)):
        run.outcomes.append(OUTCOMES[reader.below(len(OUTCOMES))])

    def send(data: bytes) -> None:
        for piece in reader.pieces(data):
            run.feed(piece)

    for segments in commands:
        text = b""
        for before, literal, synchronising in segments:
            text += before
            if literal is None:
                continue
            said = len(run.said)
            send(text + b"{%d%s}\r\n" % (len(literal), b"" if synchronising else b"+"))
            text = b""
            if synchronising:
                answers = run.said[said:]
                if run.over or not (answers and answers[-1].startswith(b"+ ")):
                    break  # refused: a good client sends no literal data and ends the command
            send(literal)
        else:
            send(text + b"\r\n")
        if run.over:
            break
    check_no_literal_commands(run)
    require(time.perf_counter() - started < SLOW_INPUT, "slow input")
    return run


def check_no_literal_commands(run: FrontRun) -> None:
    for line in run.said:
        require(not line.startswith(b"LIT"), "literal data was answered as a command", line)
    for login in run.logins:
        require(login.username != "mallory", "a Login from inside literal data")


# -- the upstream login cores ---------------------------------------------------------------------

TOKEN = "eyJ0eXAiOiJKV1QifQ.fuzz-access-token.c2lnbmF0dXJl"
MAILBOX = "shared@contoso.example"
XOAUTH2 = xoauth2(MAILBOX, TOKEN)
CHALLENGE = b"eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIiwic2NvcGUiOiJtYWlsIn0="

IMAP_SERVER = (
    b"* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2] ready\r\n", b"* OK ready\r\n",
    b"* BYE go away\r\n", b"* PREAUTH hi\r\n", b"* NO busy\r\n",
    b"* CAPABILITY IMAP4rev1 AUTH=XOAUTH2\r\n", b"* CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2\r\n",
    b"* CAPABILITY IMAP4rev1\r\n", b"X1 OK done\r\n", b"X2 OK [CAPABILITY IMAP4rev1 IDLE] in\r\n",
    b"X2 OK AUTHENTICATE completed.\r\n", b"X3 OK CAPABILITY completed\r\n",
    b"X1 NO [AUTHENTICATIONFAILED] no\r\n", b"X2 NO [UNAVAILABLE] later\r\n",
    b"X2 BAD Request is throttled. Suggested Backoff Time: 100 milliseconds\r\n",
    b"X2 BAD User is authenticated but not connected.\r\n", b"+ \r\n", b"+ " + CHALLENGE + b"\r\n",
    b"* BYE Connection closed. 14\r\n", b"* 1 EXISTS\r\n", b"x2 ok lower case\r\n",
)
POP3_SERVER = (
    b"+OK ready\r\n", b"-ERR busy\r\n", b"+ \r\n", b"+OK Logged in.\r\n", b"+ " + CHALLENGE + b"\r\n",
    b"-ERR [AUTH] Authentication failed.\r\n", b"-ERR [SYS/TEMP] later\r\n",
    b"-ERR [LOGIN-DELAY] wait\r\n", b"-ERR Request is throttled\r\n", b"+OK\r\n", b"+\r\n",
)
SMTP_SERVER = (
    b"220 ready\r\n", b"220-multi\r\n220 ready\r\n", b"554 no\r\n",
    b"250-host\r\n250-STARTTLS\r\n250 AUTH XOAUTH2\r\n", b"250-host\r\n250 AUTH=LOGIN XOAUTH2\r\n",
    b"250 host\r\n", b"250-host\r\n250 STARTTLS\r\n", b"220 go ahead\r\n",
    b"454 TLS not available\r\n", b"334 \r\n", b"334 " + CHALLENGE + b"\r\n", b"235 2.7.0 ok\r\n",
    b"535 5.7.3 Authentication unsuccessful\r\n",
    b"535 5.7.139 SmtpClientAuthentication is disabled for the Tenant\r\n",
    b"451 4.7.0 throttled\r\n", b"421 bye\r\n", b"250-", b"2500 x\r\n",
)
# Conversations that lead somewhere (a login, a refusal after a challenge): the fuzz input takes
# their next line now and then, so random inputs reach the later steps too.
HAPPY = {
    "imap": ((b"* OK ready\r\n", b"* CAPABILITY IMAP4rev1 AUTH=XOAUTH2\r\nX1 OK done\r\n", b"+ \r\n",
              b"X2 OK AUTHENTICATE completed.\r\n", b"* CAPABILITY IMAP4rev1 IDLE\r\nX3 OK done\r\n"),
             (IMAP_SERVER[0], b"+ " + CHALLENGE + b"\r\n", b"X1 NO [AUTHENTICATIONFAILED] no\r\n")),
    "pop3": ((b"+OK ready\r\n", b"+ \r\n", b"+OK Logged in.\r\n"),
             (b"+OK ready\r\n", b"+ \r\n", b"+ " + CHALLENGE + b"\r\n", b"-ERR [AUTH] failed.\r\n")),
    "smtp": ((b"220 ready\r\n", SMTP_SERVER[3], b"220 go ahead\r\n", b"250-host\r\n250 AUTH XOAUTH2\r\n",
              b"334 \r\n", b"235 2.7.0 ok\r\n"),
             (b"220 ready\r\n", SMTP_SERVER[3], b"220 go ahead\r\n", SMTP_SERVER[4], b"334 \r\n",
              b"334 " + CHALLENGE + b"\r\n", b"535 5.7.8 Authentication failed.\r\n")),
}
ECHO_PREFIXES = (b"X1 NO ", b"X2 NO ", b"X2 BAD ", b"* BYE ", b"* OK ", b"+ ", b"-ERR ", b"+OK ",
                 b"535 ", b"501 ", b"334 ", b"454 ", b"220 ")


@dataclass(frozen=True)
class UpstreamKind:
    lines: tuple[bytes, ...]
    make: Callable[[ByteReader], typing.Any]


UPSTREAMS = {
    "imap": UpstreamKind(IMAP_SERVER, lambda r: ImapUpstreamLogin(MAILBOX, TOKEN)),
    "pop3": UpstreamKind(
        POP3_SERVER, lambda r: Pop3UpstreamLogin(MAILBOX, TOKEN, max_line=64 if r.flag() else 8192)),
    "smtp": UpstreamKind(
        SMTP_SERVER, lambda r: SmtpUpstreamLogin(MAILBOX, TOKEN, starttls=r.below(4) != 0,
                                                 max_line=64 if r.flag() else 4096)),
}
# The phase an upstream core must show after each outcome.
PHASE_AFTER = {None: SignInPhase.SIGNING_IN, LoggedIn: SignInPhase.LOGGED_IN,
               LoginRefused: SignInPhase.REFUSED}
SECRETS = (TOKEN, XOAUTH2.decode(), base64.b64decode(XOAUTH2).decode())


@dataclass
class UpstreamRun:
    protocol: str
    core: typing.Any
    sent: list[bytes] = field(default_factory=list)
    outcome: LoggedIn | LoginRefused | None = None
    tls: bool = False
    tokens_sent: int = 0

    def feed(self, data: bytes) -> None:
        actions = self.core.receive_data(data)
        if self.outcome is not None:
            require(actions == [], "actions after the outcome", actions)
        closed = refused = False
        for i, action in enumerate(actions):
            if isinstance(action, Send):
                self.sent += check_lines(action.data)
                if XOAUTH2 in action.data:
                    self.tokens_sent += 1
                    require(self.tokens_sent == 1, "the token sent twice")
                    starttls = getattr(self.core, "starttls", False)
                    require(self.tls or not starttls, "the token sent before STARTTLS")
                require(TOKEN.encode() not in action.data.replace(XOAUTH2, b""), "a bare token sent")
            elif isinstance(action, StartTLS):
                require(not self.tls and self.protocol == "smtp", "StartTLS out of place")
                self.tls = True
            elif isinstance(action, Close):
                closed = True
            elif isinstance(action, (LoggedIn, LoginRefused)):
                require(self.outcome is None, "a second outcome", action)
                require(i == len(actions) - 1, "actions after the outcome", actions)
                self.outcome = action
                if isinstance(action, LoginRefused):
                    refused = True
                    message = action.error.message
                    for secret in SECRETS:
                        require(secret not in message, "a secret in an error message", message)
            else:
                raise InvariantViolation(f"unknown action {action!r}")
        require(closed == refused, "a Close without a refusal, or a refusal without Close", actions)
        phase = self.core.phase
        require(phase is PHASE_AFTER[type(self.outcome) if self.outcome else None],
                "the core's phase disagrees with its outcome", phase, self.outcome)


def run_upstream(protocol: str, data: bytes) -> UpstreamRun:
    """Server bytes from `data` into a fresh upstream login core, checked throughout; the server
    may echo what the core sent, as servers that quote a bad command do."""
    started = time.perf_counter()
    reader = ByteReader(data)
    kind = UPSTREAMS[protocol]
    run = UpstreamRun(protocol, kind.make(reader))
    happy = list(HAPPY[protocol][reader.below(len(HAPPY[protocol]))])
    calm = reader.flag()  # mostly the conversation, with a little noise
    pending = bytearray()
    for _ in range(48):
        if reader.exhausted:
            break
        op = reader.below(8)
        if (op == 6 or calm and op < 5) and happy:
            pending += happy.pop(0)
        elif op <= 2:
            pending += reader.choice(kind.lines)
        elif op == 3 and run.sent:
            pending += reader.choice(ECHO_PREFIXES) + run.sent[-1] + b"\r\n"
        elif op == 4:
            pending += reader.raw(32)
        elif op == 5:
            fragment = reader.choice(FRAGMENTS)
            pending += b"A" * (64 * reader.below(1100)) if fragment == b"\t" else fragment
        else:
            for piece in reader.pieces(bytes(pending)):
                run.feed(piece)
            pending.clear()
    for piece in reader.pieces(bytes(pending)):
        run.feed(piece)
    require(time.perf_counter() - started < SLOW_INPUT, "slow input")
    return run


# -- the command ------------------------------------------------------------------------------------

def targets() -> dict[str, Callable[[bytes], object]]:
    """The fuzz targets, by name."""
    from tests import fuzz_admin, fuzz_receiving  # they build on this module's helpers

    return {
        **fuzz_receiving.targets(),
        **fuzz_admin.targets(),
        "imap-front": lambda data: run_front("imap", data),
        "pop3-front": lambda data: run_front("pop3", data),
        "smtp-front": lambda data: run_front("smtp", data),
        "imap-literals": run_imap_literals,
        "imap-upstream": lambda data: run_upstream("imap", data),
        "pop3-upstream": lambda data: run_upstream("pop3", data),
        "smtp-upstream": lambda data: run_upstream("smtp", data),
        "proxy-header": run_balancer,
    }


def _dispatch(chosen: dict[str, Callable[[bytes], object]]) -> Callable[[bytes], None]:
    """One entry point for all targets: the first byte picks the target."""
    functions = list(chosen.values())

    def one_input(data: bytes) -> None:
        if len(functions) == 1:
            functions[0](data)
        elif data:
            functions[data[0] % len(functions)](data[1:])

    return one_input


def _run_atheris(chosen: dict[str, Callable[[bytes], object]], seconds: int) -> int:
    import atheris

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    atheris.Setup(
        [sys.argv[0], f"-max_total_time={seconds}", f"-max_len={MAX_LEN}", "-timeout=10",
         "-print_final_stats=1", f"-artifact_prefix={ARTIFACTS}/"],
        _dispatch(chosen),
    )
    atheris.Fuzz()  # exits the process when the time is up, or on the first failure
    return 0


def _run_hypothesis(chosen: dict[str, Callable[[bytes], object]], seconds: int) -> int:
    """Batches of hypothesis examples per target, each target getting its share of the time."""
    counts = dict.fromkeys(chosen, 0)
    started = time.monotonic()
    for i, (name, target) in enumerate(chosen.items()):
        until = started + seconds * (i + 1) / len(chosen)

        def counted(data: bytes, name: str = name, target: Callable[[bytes], object] = target) -> None:
            counts[name] += 1
            target(data)

        while time.monotonic() < until:
            _hypothesis_fuzzer(counted, examples=500)()
    elapsed = time.monotonic() - started
    total = sum(counts.values())
    for name, count in counts.items():
        print(f"{name:15} {count:9} inputs  {count * len(chosen) / elapsed:9.0f}/s")
    print(f"{'total':15} {total:9} inputs  {total / elapsed:9.0f}/s over {elapsed:.0f} s")
    return 0


def _hypothesis_fuzzer(target: Callable[[bytes], None], examples: int) -> Callable[[], None]:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.binary(max_size=MAX_LEN))
    def fuzz(data: bytes) -> None:
        target(data)

    return fuzz


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=60, help="how long to run in all")
    parser.add_argument("--target", choices=["all", *targets()], default="all")
    parser.add_argument("--engine", choices=["auto", "atheris", "hypothesis"], default="auto")
    parser.add_argument("--replay", type=Path, help="run one saved input (atheris artifact)")
    args = parser.parse_args(argv)
    everything = targets()
    chosen = everything if args.target == "all" else {args.target: everything[args.target]}
    if args.replay is not None:
        _dispatch(chosen)(args.replay.read_bytes())
        print("no invariant broken")
        return 0
    engine = args.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401
            engine = "atheris"
        except ImportError:
            engine = "hypothesis"
    print(f"fuzzing {', '.join(chosen)} with {engine} for {args.seconds} s", flush=True)
    if engine == "atheris":
        return _run_atheris(chosen, args.seconds)
    return _run_hypothesis(chosen, args.seconds)


if __name__ == "__main__":
    sys.exit(main())
