"""The frame every admin page shares, rendered with twisted.web.template (which escapes every
string it is given), and the small forms the pages are made of."""

from __future__ import annotations

from typing import Any

from twisted.web.template import Tag, flattenString, tags

from .auth import AdminSession, Notice

Child = Any  # what twisted.web.template can flatten: str, Tag, lists of them


async def render_page(title: str, body: list[Child], session: AdminSession | None,
                      refresh: int | None = None) -> bytes:
    """A whole page: the session's notices above `body`; `refresh` reloads it every that many
    seconds (how a page follows a sign-in without JavaScript)."""
    head: list[Child] = [
        tags.meta(charset="utf-8"),
        tags.meta(name="viewport", content="width=device-width, initial-scale=1"),
        tags.title(f"{title} · xoauth2-proxy"),
        tags.link(rel="stylesheet", href="/static/admin.css"),
        tags.link(rel="icon", href="/static/icon.svg", type="image/svg+xml"),
        tags.script(src="/static/admin.js", defer="defer"),
    ]
    if refresh is not None:
        head.append(tags.meta(**{"http-equiv": "refresh", "content": str(refresh)}))
    notices = session.take_notices() if session is not None else []
    page = tags.html(lang="en")(
        tags.head(*head),
        tags.body(
            tags.header(tags.a("xoauth2-proxy", href="/", class_="brand"), tags.span(title)),
            Tag("main")(*[notice_tag(n) for n in notices], *body),  # not in Twisted's tag list
        ),
    )
    return b"<!DOCTYPE html>\n" + await flattenString(None, page)


def notice_tag(notice: Notice) -> Tag:
    return tags.p(notice.text, class_="notice ok" if notice.ok else "notice failed",
                  role="status")


def post_form(action: str, session: AdminSession | None, *children: Child,
              class_: str = "") -> Tag:
    """A form that changes something: it carries the session's CSRF token (none for callers
    that authenticate with a bearer token, which a browser never sends on its own)."""
    hidden = [tags.input(type="hidden", name="csrf", value=session.csrf)] if session else []
    return tags.form(method="post", action=action, class_=class_)(*hidden, *children)


def button(text: str, name: str | None = None, value: str | None = None,
           class_: str = "") -> Tag:
    attributes = {"type": "submit", "class": class_}
    if name is not None:
        attributes.update(name=name, value=value or "")
    return tags.button(**attributes)(text)


def field(label: str, name: str, kind: str = "text", value: str = "", hint: str = "",
          **attributes: str) -> Tag:
    """A labelled input. Password fields never get a value."""
    shown = "" if kind == "password" else value
    return tags.label(
        tags.span(label, class_="label"),
        tags.input(type=kind, name=name, value=shown, **attributes),
        tags.small(hint) if hint else "",
    )


def choice(label: str, name: str, options: list[tuple[str, str]], selected: str) -> Tag:
    return tags.label(
        tags.span(label, class_="label"),
        tags.select(name=name)(*[
            tags.option(text, value=value, **({"selected": "selected"} if value == selected
                                               else {}))
            for value, text in options
        ]),
    )


def table(headings: list[str], rows: list[list[Child]], empty: str) -> Tag:
    if not rows:
        return tags.p(empty, class_="empty")
    return tags.table(
        tags.thead(tags.tr(*[tags.th(h) for h in headings])),
        tags.tbody(*[tags.tr(*[tags.td(cell) for cell in row]) for row in rows]),
    )
