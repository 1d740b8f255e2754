"""Form bodies and query strings from the browser (outside input), parsed strictly: only
application/x-www-form-urlencoded, bounded in size and number of fields, valid UTF-8, no field
twice, no NUL. Pure: bytes in, a dict of strings out, or FormError."""

from __future__ import annotations

from urllib.parse import parse_qsl

FORM_TYPE = "application/x-www-form-urlencoded"
MAX_BODY = 64 * 1024  # the largest form here (first-run setup) is well under 4 KiB
MAX_FIELDS = 32
MAX_VALUE = 4096


class FormError(ValueError):
    """The request's form or query cannot be used; the message says why."""


def parse_form(body: bytes, content_type: str | None) -> dict[str, str]:
    """The fields of a POST body; an empty body is an empty form, whatever its type."""
    if not body:
        return {}
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media != FORM_TYPE:
        raise FormError(f"expected a form ({FORM_TYPE})")
    return parse_fields(body)


def parse_query(uri: bytes) -> dict[str, str]:
    """The fields of the query string of a request URI (b"/path?a=1"); {} without one."""
    _, _, query = uri.partition(b"?")
    return parse_fields(query.split(b"#", 1)[0])


def parse_fields(data: bytes) -> dict[str, str]:
    if len(data) > MAX_BODY:
        raise FormError("the form is too large")
    try:
        text = data.decode("ascii")  # percent-encoding leaves only ASCII
        pairs = parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="strict",
                          max_num_fields=MAX_FIELDS)
    except UnicodeDecodeError:
        raise FormError("the form is not valid UTF-8") from None
    except ValueError:
        raise FormError("the form has too many fields") from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name in fields:
            raise FormError(f"the field {name!r} is given twice")
        if len(value) > MAX_VALUE or len(name) > 64:
            raise FormError(f"the field {name[:64]!r} is too long")
        if "\0" in name or "\0" in value:
            raise FormError("the form contains a NUL character")
        fields[name] = value
    return fields
