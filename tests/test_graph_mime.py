"""proxy.graph's MIME reading: leaves and decoding agree with the email package, bodies stream."""

from __future__ import annotations

import base64
import io
import json
from email import policy
from email.message import EmailMessage, Message
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.parser import BytesParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.graph.addresses import EnvelopeFit, fit_to_envelope
from proxy.graph.draft import UPLOAD_THRESHOLD, BodyTooLarge, plan_draft
from proxy.graph.mime import LINE_PIECE, MimeError, decoded, leaves, read_head
from proxy.graph.mime_body import for_envelope, send_mail_body
from tests.support.graph_setup import scan_message, text_message


def email_leaves(raw: bytes) -> list[tuple[str, bytes]]:
    """The oracle: leaf parts and decoded payloads as the email package reads them."""
    parsed = BytesParser(policy=policy.compat32).parsebytes(raw)
    found = []
    for part in parsed.walk():
        if not part.is_multipart():
            payload = part.get_payload(decode=True)
            found.append((part.get_content_type(), payload if isinstance(payload, bytes) else b""))
    return found


def our_leaves(raw: bytes) -> list[tuple[str, bytes]]:
    spool = io.BytesIO(raw)
    return [(leaf.headers.get_content_type(), b"".join(decoded(spool, leaf)))
            for leaf in leaves(spool)]


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode()


HAND_WRITTEN = {
    "single base64": crlf("Content-Type: application/pdf\nContent-Transfer-Encoding: base64\n\n"
                          "JVBERi0xLjcK\nAAEC\nAw==\n"),
    "base64 without its padding": crlf("Content-Type: application/pdf\n"
                                       "Content-Transfer-Encoding: base64\n\nJVBERi0xLjcK\nAAECAw\n"),
    "preamble, epilogue, whitespace after boundary": crlf(
        'Content-Type: multipart/mixed; boundary="b1"\n\npreamble\n--b1  \n'
        "Content-Type: text/plain\n\none\n--b1\nContent-Type: text/plain\n\ntwo\n\n--b1--\t\n"
        "epilogue\n"),
    "no closing delimiter": crlf('Content-Type: multipart/mixed; boundary="b1"\n\n--b1\n'
                                 "Content-Type: text/plain\n\nonly part\nlast line"),
    "look-alike boundary inside a body": crlf(
        'Content-Type: multipart/mixed; boundary="b1"\n\n--b1\nContent-Type: text/plain\n\n'
        "--b1x is not it\n--b1-- neither\n--b1--\n"),
    "bare LF line ends": (b'Content-Type: multipart/alternative; boundary="q"\n\n--q\n'
                          b"Content-Type: text/plain\n\nplain\n--q\nContent-Type: text/html\n\n"
                          b"<p>html</p>\n--q--\n"),
    "quoted-printable soft breaks": crlf(
        "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n"
        "caf=C3=A9 and a long =\nline joined\n"),
    "nested with an empty part": crlf(
        'Content-Type: multipart/mixed; boundary="outer"\n\n--outer\n'
        'Content-Type: multipart/related; boundary="inner"\n\n--inner\n'
        "Content-Type: text/html\n\n<img src=cid:x>\n--inner\nContent-Type: image/png\n"
        "Content-ID: <x>\nContent-Transfer-Encoding: base64\n\niVBORw0KGgo=\n--inner--\n"
        "--outer\nContent-Type: application/octet-stream\n\n--outer--\n"),
}


@pytest.mark.parametrize("raw", HAND_WRITTEN.values(), ids=HAND_WRITTEN.keys())
def test_leaves_agree_with_the_email_package(raw: bytes) -> None:
    """Each leaf part and its decoded body are what the email package finds."""
    assert our_leaves(raw) == email_leaves(raw)


def test_over_long_lines_are_read_in_pieces() -> None:
    """A binary body with lines far over the piece size decodes whole; boundaries still match."""
    blob = bytes(range(256)).replace(b"\n", b"").replace(b"\r", b"") * (3 * LINE_PIECE // 254)
    raw = (crlf('Content-Type: multipart/mixed; boundary="b"\n\n--b\n'
                "Content-Type: application/octet-stream\n\n") + blob + crlf("\n--b--\n"))
    assert our_leaves(raw) == [("application/octet-stream", blob)]


def test_a_huge_header_block_is_refused() -> None:
    """Header blocks over 256 KB are refused instead of being read into memory."""
    raw = b"X-Junk: " + b"a" * 300_000 + b"\r\n\r\nbody"
    with pytest.raises(MimeError):
        leaves(io.BytesIO(raw))


def _leaf(data: bytes, kind: str, encoding: str) -> Message:
    if kind == "text":
        text = data.decode("latin-1").replace("\r", "")
        part: Message = MIMEText(text, "plain", "utf-8")
        if encoding == "quoted-printable":
            del part["Content-Transfer-Encoding"]
            part.set_payload(part.get_payload(decode=True))
            from email.encoders import encode_quopri
            encode_quopri(part)
        return part
    return MIMEApplication(data, "octet-stream")


leaf_strategy = st.builds(_leaf, st.binary(max_size=3000), st.sampled_from(["text", "binary"]),
                          st.sampled_from(["base64", "quoted-printable"]))


def _multipart(children: list[Message], subtype: str) -> Message:
    container = MIMEMultipart(subtype)
    for child in children:
        container.attach(child)
    return container


tree_strategy = st.recursive(
    leaf_strategy,
    lambda inner: st.builds(_multipart, st.lists(inner, min_size=1, max_size=3),
                            st.sampled_from(["mixed", "alternative", "related"])),
    max_leaves=6,
)


@settings(max_examples=60, deadline=None)
@given(tree_strategy)
def test_random_structures_agree_with_the_email_package(tree: Message) -> None:
    """Random trees of multiparts and base64 / quoted-printable leaves decode identically."""
    raw = tree.as_bytes(policy=policy.SMTP)
    assert our_leaves(raw) == email_leaves(raw)


def test_bcc_field_uses_the_message_line_ends() -> None:
    """A message with bare LF gets its Bcc field with LF too; without extras nothing changes."""
    raw = b"From: a@contoso.com\nTo: b@contoso.com\n\nbody\n"
    head = read_head(io.BytesIO(raw))
    assert for_envelope(head, EnvelopeFit()) == (head.raw, len(head.raw))
    prefix, skip = for_envelope(head, EnvelopeFit(("c@contoso.com",)))
    assert prefix + raw[skip:] == b"Bcc: c@contoso.com\n" + raw


def test_header_recipients_the_envelope_leaves_out_are_dropped() -> None:
    """Only the envelope's recipients stay in To, Cc and Bcc (display names, RFC 2047 words and
    the line ends kept; a field left empty goes); the other fields and the body are untouched.
    With the header and the envelope in agreement, nothing changes."""
    raw = (b"From: a@contoso.com\nTo: Bob <BOB@contoso.com>, =?utf-8?q?Zo=C3=AB?= "
           b"<zoe@contoso.com>\nCc: jo@contoso.com\nSubject: s\n\nbody\n")
    head = read_head(io.BytesIO(raw))
    fit = fit_to_envelope(head.headers, ["bob@contoso.com", "x@contoso.com"])
    assert fit == EnvelopeFit(("x@contoso.com",), frozenset({"zoe@contoso.com", "jo@contoso.com"}))
    prefix, skip = for_envelope(head, fit)
    assert prefix + raw[skip:] == (b"To: Bob <BOB@contoso.com>\nBcc: x@contoso.com\n"
                                   b"From: a@contoso.com\nSubject: s\n\nbody\n")
    both = fit_to_envelope(head.headers, ["ZOE@contoso.com", "bob@contoso.com", "jo@contoso.com"])
    assert both.changes_nothing and for_envelope(head, both) == (head.raw, len(head.raw))
    zoe = fit_to_envelope(head.headers, ["zoe@contoso.com"])
    assert for_envelope(head, zoe)[0].startswith(b"To: =?utf-8?q?Zo=C3=AB?= <zoe@contoso.com>\n")


def test_a_draft_goes_to_the_envelope_only() -> None:
    """The draft's recipient lists are fitted to the envelope the same way."""
    message = EmailMessage()
    message["From"], message["Cc"] = "a@contoso.com", "d@contoso.com"
    message["To"] = "b@contoso.com, c@contoso.com"
    message.set_content("x")
    raw = message.as_bytes(policy=policy.SMTP)
    spool = io.BytesIO(raw)
    head = read_head(spool)
    fit = fit_to_envelope(head.headers, ["c@contoso.com", "e@contoso.com"])
    fields = plan_draft(spool, head, leaves(spool), fit).fields

    def listed(kind: str) -> list[str]:
        return [entry["emailAddress"]["address"] for entry in fields[f"{kind}Recipients"]]

    assert (listed("to"), listed("cc"), listed("bcc")) == (["c@contoso.com"], [], ["e@contoso.com"])


def test_envelope_only_ignores_case_and_duplicates() -> None:
    """Header recipients in any case are not added again; each extra one is added once."""
    head = read_head(io.BytesIO(crlf("To: Bob <BOB@contoso.com>\nCc: =?utf-8?q?Doe=2C_Jo?= "
                                     "<jo@contoso.com>\n\nx")))
    recipients = ["bob@contoso.com", "jo@contoso.com", "x@contoso.com", "X@contoso.com"]
    assert fit_to_envelope(head.headers, recipients).extra_bcc == ("x@contoso.com",)


@pytest.mark.parametrize("size", [0, 1, 2, 3, 49_151, 49_152, 100_000])
def test_send_mail_body_knows_its_length_and_streams(size: int) -> None:
    """len() is the exact base64 length, and reading in pieces gives the whole message."""
    raw = b"To: a@contoso.com\r\n\r\n" + bytes(i % 251 for i in range(size))
    spool = io.BytesIO(raw)
    body = send_mail_body(read_head(spool), EnvelopeFit(("b@contoso.com",)), spool, len(raw))
    pieces = []
    while piece := body.read(1000):
        assert len(piece) <= 1000
        pieces.append(piece)
    encoded = b"".join(pieces)
    assert len(encoded) == len(body)
    assert base64.b64decode(encoded) == b"Bcc: b@contoso.com\r\n" + raw


def _plan(message: EmailMessage, extra_bcc: list[str] | None = None) -> tuple:
    raw = message.as_bytes(policy=policy.SMTP)
    spool = io.BytesIO(raw)
    fit = EnvelopeFit(tuple(extra_bcc or ()))
    return plan_draft(spool, read_head(spool), leaves(spool), fit), spool


def test_draft_fields_from_headers() -> None:
    """Subject (RFC 2047), recipients with names, Reply-To, importance and From reach the JSON."""
    message = EmailMessage()
    message["From"] = "Scanner <scanner@contoso.com>"
    message["To"] = "Bob <bob@contoso.com>, eve@contoso.com"
    message["Reply-To"] = "desk@contoso.com"
    message["Subject"] = "Überweisung Nr. 5"
    message["X-Priority"] = "1 (Highest)"
    message.set_content("text")
    plan, _ = _plan(message, ["hidden@contoso.com"])
    fields = plan.fields
    assert fields["subject"] == "Überweisung Nr. 5" and fields["importance"] == "high"
    assert fields["toRecipients"] == [
        {"emailAddress": {"address": "bob@contoso.com", "name": "Bob"}},
        {"emailAddress": {"address": "eve@contoso.com"}}]
    assert fields["bccRecipients"] == [{"emailAddress": {"address": "hidden@contoso.com"}}]
    assert fields["replyTo"] == [{"emailAddress": {"address": "desk@contoso.com"}}]
    assert fields["from"] == {"emailAddress": {"address": "scanner@contoso.com", "name": "Scanner"}}
    assert fields["body"] == {"contentType": "text", "content": "text\r\n"}


def test_draft_body_and_attachments() -> None:
    """The HTML alternative is the body; a text file attachment stays an attachment; big files
    are uploaded, small ones carried in the create request, nameless ones get a name."""
    message = EmailMessage()
    message["Subject"] = "x"
    message.set_content("plain")
    message.add_alternative("<b>rich</b>", subtype="html")
    message.add_attachment("notes", filename="notes.txt")
    message.add_attachment(b"\0" * UPLOAD_THRESHOLD, maintype="application", subtype="pdf",
                           filename="Résumé.pdf")
    message.add_attachment(b"GIF89a", maintype="image", subtype="gif")
    plan, spool = _plan(message)
    assert plan.fields["body"] == {"contentType": "html", "content": "<b>rich</b>\r\n"}
    assert [p.name for p in plan.in_create] == ["notes.txt", "part-5.gif"]
    assert [(p.name, p.size) for p in plan.uploaded] == [("Résumé.pdf", UPLOAD_THRESHOLD)]
    assert plan.posted == []
    create = plan.create_request(spool)
    content = create.read()
    assert len(content) == len(create)
    assert b'"contentBytes": "' + base64.b64encode(b"GIF89a") in content
    created = json.loads(content)
    assert [a["name"] for a in created["attachments"]] == ["notes.txt", "part-5.gif"]
    assert base64.b64decode(created["attachments"][0]["contentBytes"]) == b"notes\r\n"


MUTATIONS = [b"\r\n", b"--", b'Content-Type: multipart/mixed; boundary="', b"=?utf-8?q?", b'"',
             b"<", b",", b";", b"filename*=", b"''", b"=", b"To: ", b"Bcc: ", b"(", b"\\",
             b"@", b":", b"\t", b"\x00", b"\xff", b"Content-Transfer-Encoding: base64\r\n",
             b"Content-ID: <\r\n"]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([scan_message(b"%PDF" * 300, b"PNG" * 50, cc="c@contoso.com"),
                        text_message(bcc="x <y@contoso.com>")]),
       st.lists(st.tuples(st.integers(0, 3000), st.sampled_from(MUTATIONS) | st.binary(max_size=8)),
                max_size=12))
def test_damaged_messages_never_raise_anything_unexpected(seed: bytes,
                                                          edits: list[tuple[int, bytes]]) -> None:
    """Whatever a device sends, reading it for a draft ends in a plan or a MimeError."""
    raw = bytearray(seed)
    for position, piece in edits:
        raw[position:position] = piece
    spool = io.BytesIO(bytes(raw))
    try:
        head = read_head(spool)
        fit = fit_to_envelope(head.headers, ["a@contoso.com", "b@contoso.com"])
        plan = plan_draft(spool, head, leaves(spool), fit)
    except (MimeError, BodyTooLarge):
        return
    body = plan.create_request(spool)
    assert len(body.read()) == len(body)
