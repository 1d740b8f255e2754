"""The fuzz targets of tests/fuzz.py, bounded for CI (a few hundred hypothesis examples each),
and the cases the fuzzer is about, written out."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.actions import LoggedIn, Phase
from proxy.imap.device import ImapSession
from proxy.imap.upstream import ImapUpstreamLogin
from proxy.pop3.upstream import Pop3UpstreamLogin
from proxy.smtp.upstream import SmtpUpstreamLogin
from tests import fuzz, fuzz_admin, fuzz_receiving

TARGETS = fuzz.targets()
BOUNDED = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("name", list(TARGETS))
@BOUNDED
@given(data=st.binary(max_size=fuzz.MAX_LEN))
def test_fuzz_target_keeps_its_invariants(name: str, data: bytes) -> None:
    """No exception, no hang, whole CRLF lines, logins only from received passwords, literal
    data never a command, state always valid (the rules in tests/fuzz.py)."""
    TARGETS[name](data)


def test_random_inputs_reach_logins_relays_and_upstream_outcomes() -> None:
    """The fuzz inputs get past the greeting: random bytes lead to logins, relays, literals
    and both upstream outcomes, so the invariants are checked where it matters."""
    rng = random.Random(2024)
    inputs = [rng.randbytes(rng.randrange(400)) for _ in range(300)]
    for protocol in ("imap", "pop3", "smtp"):
        fronts = [fuzz.run_front(protocol, data) for data in inputs]
        assert sum(bool(run.logins) for run in fronts) > 30, protocol
        assert any(run.phase is Phase.RELAYING for run in fronts), protocol
        upstreams = [fuzz.run_upstream(protocol, data) for data in inputs]
        assert any(isinstance(run.outcome, LoggedIn) for run in upstreams), protocol
        assert sum(run.outcome is not None for run in upstreams) > 150, protocol
    literal_runs = [fuzz.run_imap_literals(data) for data in inputs]
    assert sum(bool(run.logins) for run in literal_runs) > 30


def test_random_inputs_reach_deliveries_and_refusals() -> None:
    """The receiving targets get past the envelope: random bytes lead to delivered messages,
    BDAT and DATA alike, and to oversized ones refused with 552."""
    rng = random.Random(2025)
    runs = [fuzz_receiving.run_receiving(rng.randbytes(rng.randrange(300))) for _ in range(300)]
    assert sum(bool(run.delivered) for run in runs) > 60
    said = [line for run in runs for line in run.said]
    assert any(line.startswith(b"552 5.3.4") for line in said)
    assert any(line.endswith(b"octets received") for line in said)
    assert any(line.startswith(b"354") for line in said)


@pytest.mark.parametrize("synchronising", [True, False])
def test_login_literals_that_look_like_commands_are_not_obeyed(synchronising: bool) -> None:
    """`a1 LOGIN {11}` followed by `x1 LOGOUT` as the literal: the literal is the user name, and
    neither x1 nor the x2 inside the password literal is ever answered."""
    run = fuzz.FrontRun("imap", ImapSession(), [])
    run.start()
    plus = b"" if synchronising else b"+"
    run.feed(b"a1 LOGIN {11%s}\r\n" % plus)
    if synchronising:
        assert run.said[-1].startswith(b"+ ")
    run.feed(b"x1 LOGOUT\r\n {15%s}\r\n" % plus)
    run.feed(b"x2 CAPABILITY\r\n\r\n")
    assert [(login.username, login.password) for login in run.logins] == [
        ("x1 LOGOUT\r\n", "x2 CAPABILITY\r\n")
    ]
    assert run.said[-1].startswith(b"a1 NO [UNAVAILABLE]")
    assert not any(line.startswith((b"x1", b"x2", b"* BYE", b"* CAPABILITY")) for line in run.said)


def test_command_name_sent_as_a_literal_cannot_forge_an_answer_line() -> None:
    """A command whose name is a literal holding CRLF and text gets one BAD line; no line of
    the client's making comes back."""
    run = fuzz.FrontRun("imap", ImapSession(), [])
    run.start()
    run.feed(b"A {15+}\r\nX\r\n* BYE forged\r\n")
    assert run.said[-1].startswith(b"A BAD")
    assert not any(line.upper().startswith(b"* BYE") for line in run.said)


def test_refused_synchronising_literal_is_not_waited_for() -> None:
    """A synchronising literal over the cap is refused before the client sends it, so the
    client's next line is a command again (the stream stays in step)."""
    run = fuzz.FrontRun("imap", ImapSession(max_literal=100), [])
    run.start()
    run.feed(b"a1 LOGIN {101}\r\n")
    assert run.said[-1].startswith(b"a1 BAD")
    run.feed(b"a2 NOOP\r\n")
    assert run.said[-1] == b"a2 OK NOOP completed"


# What each upstream core sends and the server's answer to it, up to the token; the server then
# refuses the token by quoting the line it got, as some servers quote a bad command.
UPSTREAM_TO_TOKEN = {
    "imap": (ImapUpstreamLogin, [b"* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2] hi\r\n"],
             b"X1 NO "),
    "pop3": (Pop3UpstreamLogin, [b"+OK hi\r\n", b"+ \r\n"], b"-ERR "),
    "smtp": (SmtpUpstreamLogin, [b"220 hi\r\n", b"250-hi\r\n250 STARTTLS\r\n", b"220 go\r\n",
                                 b"250-hi\r\n250 AUTH XOAUTH2\r\n", b"334 \r\n"], b"535 "),
}


@pytest.mark.parametrize("protocol", ["imap", "pop3", "smtp"])
def test_server_quoting_the_token_does_not_put_it_in_the_error(protocol: str) -> None:
    """A server that refuses XOAUTH2 by quoting the line it got: the error names neither the
    token nor the XOAUTH2 string."""
    make, answers, refusal = UPSTREAM_TO_TOKEN[protocol]
    run = fuzz.UpstreamRun(protocol, make(fuzz.MAILBOX, fuzz.TOKEN))
    for answer in answers:
        run.feed(answer)
    assert fuzz.XOAUTH2 in run.sent[-1]
    run.feed(refusal + run.sent[-1] + b"\r\n")
    assert run.outcome is not None


def test_random_inputs_reach_every_proxy_header_outcome() -> None:
    """The PROXY header target's inputs reach devices built from v1, v2 and LOCAL headers and
    refusals, so its rules are checked on all of them."""
    rng = random.Random(2025)
    outcomes = [fuzz.run_balancer(bytes([n % 256]) + rng.randbytes(rng.randrange(80)))
                for n in range(400)]
    peers = {peer for refused, peer, _, _ in outcomes if not refused}
    assert {"192.0.2.7", "2001:db8::7", "10.0.0.2"} <= peers
    assert sum(refused for refused, *_ in outcomes) > 50


def test_admin_parser_inputs_reach_accepted_values() -> None:
    """The admin parsers' fuzz inputs are not all refused: forms with fields, found cookies and
    tokens come out, so the invariants are checked on what the page would use."""
    rng = random.Random(2025)
    inputs = [rng.randbytes(rng.randrange(300)) for _ in range(2000)]
    forms = [fuzz_admin.run_admin_form(data) for data in inputs]
    assert sum(bool(form) for form in forms) > 40
    assert sum(fuzz_admin.run_admin_cookie(data) is not None for data in inputs) > 50
    assert sum(fuzz_admin.run_admin_token(data) is not None for data in inputs) > 50
