"""The console's door: the session check and CSRF check on every request, login and logout."""

from __future__ import annotations

import hmac

from aiohttp import web
from aiohttp.typedefs import Handler
from yarl import URL

from pgcourier.admin.context import CONTEXT
from pgcourier.admin.hosts import loopback_authority
from pgcourier.admin.ui.auth import CSRF_FIELD, SESSION_COOKIE, SESSION_SECONDS
from pgcourier.admin.ui.render import (
    PREFIX,
    SESSION,
    SIGNER,
    error_page,
    first,
    form,
    render,
    see_other,
)

LOGIN = f"{PREFIX}/login"
OPEN_PREFIXES = (f"{PREFIX}/static/",)


def _secure(request: web.Request) -> bool:
    """Whether the session cookie is marked Secure: when this server itself speaks TLS, and
    whenever it is reached by a name other than loopback. Beyond loopback the README requires a
    TLS-terminating proxy in front, and a cookie that could travel over plain HTTP (a URL typed
    with http://, no HSTS) would carry a 12-hour session in clear. X-Forwarded-Proto is not
    trusted: any client can send it when no proxy strips it."""
    return request.secure or not loopback_authority(request.host)


def _set_session(request: web.Request, response: web.StreamResponse, value: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        value,
        max_age=SESSION_SECONDS,
        path=PREFIX,
        httponly=True,
        samesite="Strict",
        secure=_secure(request),
    )


@web.middleware
async def console_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """With a token, a valid session or the way to the login form; without one (loopback only),
    a session handed out to bind CSRF tokens. Every POST but the login carries the CSRF token
    of its own action, or gets a 403 page and changes nothing."""
    if request.path.startswith(OPEN_PREFIXES):
        return await handler(request)
    ctx = request.config_dict[CONTEXT]
    signer = request.config_dict[SIGNER]
    session = signer.verify(request.cookies.get(SESSION_COOKIE))
    fresh: str | None = None
    if session is None and not ctx.has_token:
        fresh = signer.issue()
        session = signer.verify(fresh)
    if session is not None:
        request[SESSION] = session
    is_login = request.path == LOGIN
    if session is None and not is_login:
        if request.method in ("GET", "HEAD"):
            raise web.HTTPSeeOther(URL(LOGIN).with_query(next=request.path_qs))
        return error_page(request, 401, "Your session has ended: log in again.")
    # The login form needs no CSRF token: posting it takes the admin token itself, which a
    # forged request cannot know, and it changes nothing on the server.
    # Every method but the safe ones: a PUT or DELETE route added later is covered too.
    if request.method not in ("GET", "HEAD", "OPTIONS") and not is_login:
        fields = await form(request)
        if fresh is not None or not signer.check_csrf(
            session, request.path, first(fields, CSRF_FIELD)
        ):
            return error_page(
                request,
                403,
                "This form's CSRF token is missing or wrong (or the session changed since the "
                "page was loaded): nothing was changed. Reload the page and try again.",
                CSRF_FIELD,
            )
    response = await handler(request)
    if fresh is not None:
        _set_session(request, response, fresh)
    return response


def _next(target: str | None) -> str:
    """Where to go after logging in: a console path only, never another site."""
    # Printable ASCII only: a CR/LF would make the Location header unsendable (aiohttp refuses
    # it), turning a crafted login link into a failed login.
    if (
        target
        and target.isascii()
        and target.isprintable()
        and target.startswith(f"{PREFIX}/")
        and not target.startswith("//")
    ):
        return target
    return f"{PREFIX}/"


async def login_form(request: web.Request) -> web.StreamResponse:
    if not request.config_dict[CONTEXT].has_token:
        raise web.HTTPSeeOther(f"{PREFIX}/")
    return render(request, "login.html", {"next": _next(request.query.get("next")), "error": None})


async def login(request: web.Request) -> web.StreamResponse:
    ctx = request.config_dict[CONTEXT]
    if ctx.token is None:
        raise web.HTTPSeeOther(f"{PREFIX}/")
    fields = await form(request)
    offered = first(fields, "token") or ""
    target = _next(first(fields, "next"))
    # The token is ASCII (see the settings); anything else is simply wrong.
    if not offered.isascii() or not hmac.compare_digest(offered, ctx.token):
        return render(request, "login.html", {"next": target, "error": "Wrong token."}, status=401)
    response = see_other(target)
    _set_session(request, response, request.config_dict[SIGNER].issue())
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    response = see_other(LOGIN if request.config_dict[CONTEXT].has_token else f"{PREFIX}/")
    response.del_cookie(SESSION_COOKIE, path=PREFIX)
    return response
