"""The review queue's web application (aiohttp): pages, login, decisions, /metrics.

Routes::

    GET  /login            the login form (sets the login CSRF cookie)
    POST /login            name + password -> session cookie        (origin + token checked)
    POST /logout           ends the session                         (session + CSRF)
    GET  /                 the queue: oldest hold first, filters reason/asset/amount
    POST /decide           Release / Refuse with a required "why"   (session + CSRF + origin)
    GET  /static/review.css
    GET  /metrics /healthz /readyz   (no login: what Prometheus and the orchestrator read)

No anonymous writes: every POST but the login needs a session. Cross-site request forgery is
stopped three times over: ``SameSite=Strict`` cookies, a synchronizer token per session (the
login form: a double-submitted cookie token), and an origin check that refuses a POST whose
``Origin`` (else ``Referer``) is not the service's own origin (``DETECTOR_REVIEW_PUBLIC_URL``
when set, else the request's host) or whose ``Sec-Fetch-Site`` says cross-site. Every page
is sent with a Content-Security-Policy that allows no script, no framing and forms only to
this origin.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import logging
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from aiohttp import web
from prometheus_client import CollectorRegistry

from detector.config import Settings
from detector.errors import InvalidEvent
from detector.labels import Label
from detector.review.auth import (
    LOGIN_FAILURES_PER_CLIENT,
    LoginThrottle,
    Session,
    Sessions,
    Users,
    tokens_equal,
)
from detector.review.pages import (
    STYLESHEET,
    ItemView,
    QueueView,
    login_page,
    message_page,
    queue_page,
)
from detector.review.queue import Filters, ReviewQueue
from detector.review.records import ReviewDecision, analyst_label, new_review_decision
from detector.stream.metrics import ReviewMetrics, render

__all__ = [
    "LOGIN_COOKIE",
    "MAX_ROWS",
    "SESSION_COOKIE",
    "Publish",
    "Readiness",
    "ReviewState",
    "create_web_app",
]

log = logging.getLogger(__name__)
audit_log = logging.getLogger("detector.review.audit")

SESSION_COOKIE = "review_session"
LOGIN_COOKIE = "review_login"
# The login form's token lives this long (seconds): enough to type a password.
_LOGIN_TOKEN_TTL_S = 3600
# Largest request body accepted (bytes): a decision is a few ids and a paragraph.
_MAX_BODY_BYTES = 64 * 1024
# Rows rendered per page, oldest first: each carries its context, and a page of thousands
# helps nobody; the header says how many more match (narrow them with the filters).
MAX_ROWS = 200
# User agents are clipped in audit records (characters).
_MAX_USER_AGENT = 256
_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
_SECURITY_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}

# Write one final decision and its label to Kafka; raises when the decision was not
# acknowledged (the service's: an idempotent acks=all producer; tests inject their own).
Publish = Callable[[ReviewDecision, Label], Awaitable[None]]


@dataclass
class Readiness:
    """Whether the queue has caught up with Kafka (decisions are refused before)."""

    ready: bool = False
    detail: str = "starting"


@dataclass
class ReviewState:
    """Everything the handlers share."""

    settings: Settings
    queue: ReviewQueue
    users: Users
    publish: Publish
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    readiness: Readiness = field(default_factory=Readiness)
    clock: Callable[[], float] = time.time
    sessions: Sessions = field(init=False)
    throttle_names: LoginThrottle = field(default_factory=LoginThrottle)
    throttle_clients: LoginThrottle = field(
        default_factory=lambda: LoginThrottle(failures=LOGIN_FAILURES_PER_CLIENT)
    )
    metrics: ReviewMetrics = field(init=False)
    in_flight: set[str] = field(default_factory=set)
    instance: str = field(
        default_factory=lambda: f"detector-review {_version()} on {socket.gethostname()}"
    )

    def __post_init__(self) -> None:
        self.sessions = Sessions(self.settings.review_session_ttl_s, clock=self.clock)
        self.metrics = ReviewMetrics(self.registry)
        self.metrics.bind(
            lambda: self.queue.stats(self.clock()).depth,
            lambda: self.queue.stats(self.clock()).oldest_age_s,
            lambda: self.queue.stats(self.clock()).overdue,
        )

    @property
    def secure_cookies(self) -> bool:
        return self.settings.review_public_url.startswith("https://")


def _version() -> str:
    try:
        return importlib.metadata.version("withdrawal-detector")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree
        return "unknown"


STATE: web.AppKey[ReviewState] = web.AppKey("review_state", ReviewState)


def create_web_app(state: ReviewState) -> web.Application:
    """The aiohttp application over ``state``."""
    app = web.Application(client_max_size=_MAX_BODY_BYTES, middlewares=[_security_headers])
    app[STATE] = state
    app.router.add_get("/login", _login_form)
    app.router.add_post("/login", _login)
    app.router.add_post("/logout", _logout)
    app.router.add_get("/", _queue)
    app.router.add_post("/decide", _decide)
    app.router.add_get("/static/review.css", _stylesheet)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    return app


@web.middleware
async def _security_headers(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # aiohttp's own 404/405/413...: the same headers
        exc.headers.update(_SECURITY_HEADERS)
        exc.headers.setdefault("Cache-Control", "no-store")
        raise
    response.headers.update(_SECURITY_HEADERS)
    response.headers.setdefault("Cache-Control", "no-store")
    return response


# Helpers ----------------------------------------------------------------------------------


def _state(request: web.Request) -> ReviewState:
    return request.app[STATE]


def _page(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def _see_other(location: str) -> web.Response:
    """303 See Other: after a POST, the browser GETs ``location``."""
    return web.Response(status=303, headers={"Location": location})


def _refuse(status: int, title: str, text: str, back: str = "/") -> web.Response:
    return _page(message_page(title, text, back=back), status)


def _expected_origin(request: web.Request, public_url: str) -> str:
    if public_url:
        parts = urlsplit(public_url)
        return f"{parts.scheme}://{parts.netloc}".lower()
    return f"{request.scheme}://{request.host}".lower()


def cross_site_problem(request: web.Request, public_url: str) -> str | None:
    """Why a POST does not come from our own pages (None: it does)."""
    expected = _expected_origin(request, public_url)
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return f"a {site} request"
    origin = request.headers.get("Origin")
    if origin is not None:
        if origin.lower() != expected:
            return f"origin {origin!r} is not {expected!r}"
        return None
    referer = request.headers.get("Referer")
    if referer is not None:
        if referer.lower() == expected or referer.lower().startswith(expected + "/"):
            return None
        return f"referer {referer[:200]!r} is not on {expected!r}"
    return "neither Origin nor Referer says where the request comes from"


def _session(request: web.Request) -> tuple[str | None, Session | None]:
    state = _state(request)
    token = request.cookies.get(SESSION_COOKIE)
    session = state.sessions.get(token)
    if session is not None and not state.users.exists(session.user):
        state.sessions.drop_user(session.user)  # removed from the users file
        session = None
    return token, session


async def _form(request: web.Request) -> dict[str, str]:
    data = await request.post()
    return {k: v for k, v in data.items() if isinstance(v, str)}


def _client(request: web.Request) -> str:
    return request.remote or "unknown"


# Login ------------------------------------------------------------------------------------


def _login_response(
    state: ReviewState, *, error: str | None = None, status: int = 200
) -> web.Response:
    token = secrets.token_urlsafe(32)
    response = _page(login_page(token, error=error), status)
    response.set_cookie(
        LOGIN_COOKIE,
        token,
        max_age=_LOGIN_TOKEN_TTL_S,
        path="/login",
        httponly=True,
        samesite="Strict",
        secure=state.secure_cookies or None,
    )
    return response


async def _login_form(request: web.Request) -> web.StreamResponse:
    state = _state(request)
    _, session = _session(request)
    if session is not None:
        return _see_other("/")
    return _login_response(state)


async def _login(request: web.Request) -> web.StreamResponse:
    state = _state(request)
    problem = cross_site_problem(request, state.settings.review_public_url)
    if problem is not None:
        log.warning("login refused from %s: %s", _client(request), problem)
        return _refuse(403, "Refused", f"Cross-site login refused: {problem}.", "/login")
    form = await _form(request)
    cookie = request.cookies.get(LOGIN_COOKIE, "")
    if not cookie or not tokens_equal(cookie, form.get("csrf_token", "")):
        return _login_response(state, error="The form expired; please log in again.", status=403)
    name, password = form.get("username", "").strip(), form.get("password", "")
    by_name, by_client = [name[:64]], [_client(request)]
    if state.throttle_names.blocked(by_name) or state.throttle_clients.blocked(by_client):
        return _login_response(
            state, error="Too many failed logins; wait a few minutes.", status=429
        )
    loop = asyncio.get_running_loop()
    ok = await loop.run_in_executor(None, state.users.verify, name, password)  # scrypt: ~50 ms
    if not ok:
        state.throttle_names.failed(by_name)
        state.throttle_clients.failed(by_client)
        log.warning("failed login for %r from %s", name[:64], _client(request))
        return _login_response(state, error="Unknown analyst or wrong password.", status=401)
    state.throttle_names.succeeded(by_name)
    token, session = state.sessions.create(name)
    log.info("analyst %s logged in from %s (session %s)", name, _client(request), session.tag)
    response = _see_other("/")
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(state.settings.review_session_ttl_s),
        path="/",
        httponly=True,
        samesite="Strict",
        secure=state.secure_cookies or None,
    )
    response.del_cookie(LOGIN_COOKIE, path="/login")
    return response


async def _logout(request: web.Request) -> web.StreamResponse:
    state = _state(request)
    token, session = _session(request)
    refused = _check_write(request, session, await _form(request))
    if refused is not None:
        return refused
    assert session is not None
    state.sessions.drop(token)
    log.info("analyst %s logged out (session %s)", session.user, session.tag)
    response = _see_other("/login")
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


def _check_write(
    request: web.Request, session: Session | None, form: dict[str, str]
) -> web.Response | None:
    """Refuse a write without a session, from another origin, or with a wrong CSRF token."""
    state = _state(request)
    if session is None:
        return _refuse(401, "Log in first", "Only a logged-in analyst can do this.", "/login")
    problem = cross_site_problem(request, state.settings.review_public_url)
    if problem is not None:
        log.warning("cross-site POST by %s refused: %s", session.user, problem)
        return _refuse(403, "Refused", f"Cross-site request refused: {problem}.")
    if not tokens_equal(form.get("csrf_token", ""), session.csrf):
        log.warning("POST by %s with a wrong CSRF token refused", session.user)
        return _refuse(403, "Refused", "The form is stale or forged (CSRF token); reload.")
    return None


# The queue --------------------------------------------------------------------------------


async def _queue(request: web.Request) -> web.StreamResponse:
    state = _state(request)
    _, session = _session(request)
    if session is None:
        return _see_other("/login")
    filters, problems = Filters.parse(dict(request.query))
    now = state.clock()
    queue = state.queue
    pending = queue.pending(filters)
    items = []
    for item in pending[:MAX_ROWS]:
        w = item.withdrawal
        fan_in = queue.fan_in(w.destination, w.requested_at) if w else None
        items.append(ItemView(item, queue.recent_withdrawals(item.account_id), fan_in))
    flash, session.flash = session.flash, None
    view = QueueView(
        user=session.user,
        csrf=session.csrf,
        now=now,
        items=items,
        stats=queue.stats(now),
        filters=filters,
        reasons=queue.reasons(),
        assets=queue.assets(),
        ready=state.readiness.ready,
        flash=flash,
        problems=problems,
        matching=len(pending),
    )
    return _page(queue_page(view))


async def _decide(request: web.Request) -> web.StreamResponse:
    state = _state(request)
    _, session = _session(request)
    if session is None:
        return _refuse(401, "Log in first", "Only a logged-in analyst can decide.", "/login")
    form = await _form(request)
    refused = _check_write(request, session, form)
    if refused is not None:
        return refused
    if not state.readiness.ready:
        return _refuse(503, "Not ready", "The queue is still catching up with Kafka; retry.")
    wid = form.get("withdrawal_id", "")
    item = state.queue.get(wid)
    if item is None:
        done = state.queue.resolution(wid)
        text = (
            f"Already decided: {done.decision} by {done.reviewer} at {done.reviewed_at_text}."
            if done
            else "This withdrawal is not waiting for review."
        )
        return _refuse(409, "Nothing to decide", text)
    if wid in state.in_flight:
        return _refuse(409, "Being decided", "Another decision on it is being written; reload.")
    try:
        decision = new_review_decision(
            held=item.verdict,
            withdrawal=item.withdrawal,
            decision=form.get("decision", ""),
            reviewer=session.user,
            why=form.get("why", ""),
            at=state.clock(),
            audit={
                "client_addr": _client(request),
                "user_agent": request.headers.get("User-Agent", "")[:_MAX_USER_AGENT],
                "session": session.tag,
                "service": state.instance,
            },
        )
        label = analyst_label(decision)
    except InvalidEvent as exc:
        return _refuse(400, "Not recorded", exc.reason)
    state.in_flight.add(wid)
    try:
        await state.publish(decision, label)
    except Exception as exc:
        log.error("review decision on %r NOT recorded: %r", wid, exc)
        return _refuse(
            503,
            "Not recorded",
            "Kafka did not acknowledge the decision; it was not recorded. Try again.",
        )
    finally:
        state.in_flight.discard(wid)
    state.queue.apply_review(decision)
    state.metrics.observe_decision(decision.decision)
    audit_log.info("review decision %s", json.dumps(decision.to_json(), ensure_ascii=True))
    verb = "Refused" if decision.decision == "refuse" else "Released"
    session.flash = f"{verb} {wid} (account {item.account_id}); review {decision.review_id}."
    return _see_other("/")


# Static, metrics, health --------------------------------------------------------------------


async def _stylesheet(request: web.Request) -> web.StreamResponse:
    return web.Response(
        text=STYLESHEET,
        content_type="text/css",
        charset="utf-8",
        headers={"Cache-Control": "max-age=3600"},
    )


async def _metrics(request: web.Request) -> web.StreamResponse:
    payload, content_type = render(_state(request).registry)
    # aiohttp refuses a charset inside content_type=; a raw header carries it unchanged.
    return web.Response(body=payload, headers={"Content-Type": content_type})


async def _healthz(request: web.Request) -> web.StreamResponse:
    return web.Response(text="ok\n")


async def _readyz(request: web.Request) -> web.StreamResponse:
    readiness = _state(request).readiness
    if readiness.ready:
        return web.Response(text=f"ready: {readiness.detail}\n")
    return web.Response(text=f"not ready: {readiness.detail}\n", status=503)
