"""The admin page's web site: who may do what, and which page or action answers.

Public: /healthz, the stylesheet and script, and the landing address of an authorisation code
sign-in (Microsoft's redirect, recognised by its unguessable `state`). Everything else needs the
token: `?token=` (exchanged for a session cookie and a redirect to the same address without it;
/metrics takes it as it is, for scrapers without cookies) or `Authorization: Bearer TOKEN`.
Forms posted with the cookie must carry the session's CSRF token.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource, server

from ..errors import ConfigError, ProxyError
from ..glue.control import reload_now
from ..glue.runtime import Runtime
from .auth import (
    AdminSession,
    AdminSessions,
    Notice,
    bearer_token,
    cookie_name,
    cookie_value,
    same_secret,
    session_cookie,
)
from .authorise import Authorisations
from .flow_pages import (
    auth_code_page,
    device_code_page,
    landing_page,
    password_page,
    setup_page,
)
from .forms import FormError, parse_form, parse_query
from .http import TEXT, Answer, redirect, write_answer
from .monitoring import health_answer, metrics_answer
from .overview import gather
from .pages import authorise_link, overview_page
from .setup import answers_from_form, apply_setup
from .static import FILES

log = Logger(namespace="xoauth2-proxy")


@dataclass
class Call:
    """One authorised request, parsed."""

    request: server.Request
    query: dict[str, str]
    form: dict[str, str]
    session: AdminSession | None  # None: authorised by a bearer token (no browser, no notices)

    def notify(self, ok: bool, text: str) -> None:
        if self.session is not None:
            self.session.notices.append(Notice(ok, text))


Handler = Callable[["AdminPage", Call], Awaitable[Answer]]


def _plain(status: int, text: str) -> Answer:
    """An answer that shows nothing of the proxy: for refusals."""
    return Answer(status, (text + "\n").encode(), TEXT)


class AdminPage:
    def __init__(self, runtime: Runtime, token: str, port: int, setup_pending: bool) -> None:
        self.runtime = runtime
        self.token = token
        self.port = port
        self.cookie = cookie_name(port)
        self.setup_pending = setup_pending
        self.sessions = AdminSessions()
        self.flows = Authorisations(runtime)

    async def answer(self, request: server.Request) -> Answer:
        path = request.path.decode("ascii", "replace")
        method = request.method.decode("ascii", "replace")
        if method not in ("GET", "HEAD", "POST"):
            return _plain(405, "Method not allowed.")
        try:
            query = parse_query(request.uri)
        except FormError as e:
            return _plain(400, f"Bad request: {e}")
        if method != "POST" and path in FILES:
            body, content_type = FILES[path]
            return Answer(200, body, content_type, cacheable=True)
        if method != "POST" and path == "/healthz":
            return health_answer(self.runtime)
        if method != "POST" and path == "/" and "state" in query:
            return await self.landing(request, query["state"])
        access = self._authenticate(request, query, path)
        if isinstance(access, Answer):
            return access
        form: dict[str, str] = {}
        if method == "POST":
            try:
                body = request.content.read() if request.content is not None else b""
                form = parse_form(body, request.getHeader("content-type"))
            except FormError as e:
                return _plain(400, f"Bad request: {e}")
            if access is not None and not access.csrf_matches(form.get("csrf")):
                return _plain(403, "This form has expired or did not come from the admin page; "
                              "reload the page and try again.")
        handler = (POST_ROUTES if method == "POST" else GET_ROUTES).get(path)
        if handler is None:
            return _plain(404, "Not found.")
        return await handler(self, Call(request, query, form, access))

    def _authenticate(self, request: server.Request, query: dict[str, str],
                      path: str) -> AdminSession | None | Answer:
        """The session (None for a bearer token), or the answer that refuses or redirects."""
        if "token" in query:
            if not same_secret(query["token"], self.token):
                return _plain(403, "Wrong token.")
            if path == "/metrics":
                return None
            session_id, _ = self.sessions.create()
            rest = {k: v for k, v in query.items() if k != "token"}
            clean = path + ("?" + urlencode(rest) if rest else "")
            return redirect(clean, {"Set-Cookie": session_cookie(self.cookie, session_id)})
        header = request.getHeader("authorization")
        if header is not None:
            given = bearer_token(header)
            return None if given and same_secret(given, self.token) else _plain(403, "Wrong token.")
        session = self.sessions.find(cookie_value(request.getHeader("cookie"), self.cookie))
        if session is not None:
            return session
        refusal = _plain(401, "Open the admin page's address with its token, as printed when "
                         "the proxy started (http://HOST:PORT/?token=...).")
        refusal.headers["WWW-Authenticate"] = 'Bearer realm="xoauth2-proxy"'
        return refusal

    # -- pages --

    async def home(self, call: Call) -> Answer:
        if self.setup_pending:
            return Answer(200, await setup_page(call.session, {}))
        return Answer(200, await overview_page(await gather(self.runtime), call.session))

    async def metrics(self, call: Call) -> Answer:
        return await metrics_answer(self.runtime, call.request.getHeader("accept"))

    async def authorise_page(self, call: Call) -> Answer:
        account = self.runtime.config.accounts.get(call.query.get("account", "").lower())
        if account is None:
            return _plain(404, "No such account in the configuration.")
        flow = self.flows.flow_of(account.username)
        if flow is None:
            return Answer(200, await password_page(account, call.session))
        if flow.outcome is not None:
            self.flows.flows.pop(account.username.lower(), None)
            call.notify(flow.outcome.ok, flow.outcome.text)
            return redirect("/" if flow.outcome.ok else authorise_link(account.username))
        if flow.device is not None:
            return Answer(200, await device_code_page(flow, call.session))
        return Answer(200, await auth_code_page(flow, call.session))

    async def landing(self, request: server.Request, state: str) -> Answer:
        flow = self.flows.by_state(state)
        if flow is None:
            return Answer(400, await landing_page(None))
        outcome = await self.flows.redeem(flow, request.uri.decode("ascii", "replace"))
        return Answer(200 if outcome.ok else 400, await landing_page(outcome))

    # -- actions --

    async def reload(self, call: Call) -> Answer:
        outcome = await reload_now(self.runtime)
        call.notify(outcome.ok, f"Reloaded: {outcome.text}" if outcome.ok
                    else f"Reload refused; the running configuration is kept: {outcome.text}")
        return redirect("/")

    async def lift_lockout(self, call: Call) -> Answer:
        kind, key = call.form.get("kind", ""), call.form.get("key", "")
        if self.runtime.throttle.lift(kind, key):
            log.info("lockout of {kind} {key} lifted from the admin page", kind=kind, key=key,
                     event="lockout_lifted")
            call.notify(True, f"The lockout of {kind} {key} is lifted.")
        else:
            call.notify(False, f"{kind} {key} is not locked out (any more).")
        return redirect("/")

    async def authorise(self, call: Call) -> Answer:
        account = self.runtime.config.accounts.get(call.form.get("account", "").lower())
        if account is None:
            return _plain(404, "No such account in the configuration.")
        password = call.form.get("password", "")
        problem = None
        if not password:
            problem = "The password must not be empty."
        elif not same_secret(password, call.form.get("password_again", "")):
            problem = "The two passwords differ; type them again."
        if problem is not None:
            return Answer(200, await password_page(account, call.session, problem))
        flow = await self.flows.start(account, password, self._redirect_uri(call.request))
        if flow.outcome is not None and flow.outcome.ok:
            self.flows.flows.pop(account.username.lower(), None)
            call.notify(True, flow.outcome.text)
            return redirect("/")
        return redirect(authorise_link(account.username))

    async def pasted_redirect(self, call: Call) -> Answer:
        flow = self.flows.flow_of(call.form.get("account", ""))
        if flow is None or flow.request is None or flow.done:
            call.notify(False, "That sign-in is no longer in progress; start it again.")
            return redirect("/")
        await self.flows.redeem(flow, call.form.get("url", ""))
        return redirect(authorise_link(flow.account.username))

    async def setup(self, call: Call) -> Answer:
        if not self.setup_pending:
            return redirect("/")
        values = {k: v for k, v in call.form.items() if k not in ("csrf", "client_secret")}
        try:
            answers = answers_from_form(call.form, self._listen(call.request))
            config = await apply_setup(self.runtime, answers)
        except ConfigError as e:
            return Answer(200, await setup_page(call.session, values, e.message))
        self.setup_pending = False
        call.notify(True, f"Written to {config.path}; the {answers.protocol.upper()} listener "
                    f"on port {answers.port} is running. Now authorise {answers.username}.")
        return redirect(authorise_link(answers.username))

    # -- helpers --

    def _redirect_uri(self, request: server.Request) -> str:
        """Where Microsoft sends the browser back: this page, on the loopback name the browser
        used (the session cookie is per host name), else localhost (Entra ID allows http only
        on loopback; another machine's browser then pastes the address)."""
        host = request.getRequestHostname().decode("ascii", "replace")
        return f"http://{host if host == '127.0.0.1' else 'localhost'}:{self.port}/"

    def _listen(self, request: server.Request) -> str:
        address = request.getHost()
        interface = getattr(address, "host", "127.0.0.1")
        return f"tcp:{self.port}:interface={interface}"


GET_ROUTES: dict[str, Handler] = {
    "/": AdminPage.home,
    "/metrics": AdminPage.metrics,
    "/authorise": AdminPage.authorise_page,
}
POST_ROUTES: dict[str, Handler] = {
    "/reload": AdminPage.reload,
    "/lockouts/lift": AdminPage.lift_lockout,
    "/authorise": AdminPage.authorise,
    "/authorise/redirect": AdminPage.pasted_redirect,
    "/setup": AdminPage.setup,
}


class AdminResource(resource.Resource):
    isLeaf = True

    def __init__(self, page: AdminPage) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.page = page

    def render(self, request: server.Request) -> Any:
        d = defer.Deferred.fromCoroutine(self.page.answer(request))
        d.addCallbacks(lambda answer: write_answer(request, answer),
                       lambda failure: self._fault(request, failure))
        return server.NOT_DONE_YET

    def _fault(self, request: server.Request, failure: Failure) -> None:
        if isinstance(failure.value, ProxyError):
            write_answer(request, _plain(503, failure.value.message))
            return
        log.failure("admin page: {method} {path} failed", failure,
                    method=request.method.decode("ascii", "replace"),
                    path=request.path.decode("ascii", "replace"), event="admin_error")
        write_answer(request, _plain(500, "Internal error; see the proxy's log."))
