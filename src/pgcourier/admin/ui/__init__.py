"""The operator console: server-rendered pages under /ui/ over the same operations as the API.

Mounted by :func:`pgcourier.admin.app.create_app` as a sub-application unless
``PGCOURIER_UI_ENABLED=false``. Its own middlewares turn failures into HTML pages and check the
session and CSRF tokens (see :mod:`.auth`); the admin app's Host/Origin guard applies as well.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from pgcourier.admin.context import CONTEXT, AdminContext
from pgcourier.admin.ui import dead_letters, endpoints, events, test_sends
from pgcourier.admin.ui.auth import Signer
from pgcourier.admin.ui.overview import overview
from pgcourier.admin.ui.render import PREFIX, SIGNER, html_errors, setup_templates
from pgcourier.admin.ui.session import console_guard, login, login_form, logout

STATIC = Path(__file__).parent / "static"

__all__ = ["PREFIX", "create_console"]


def create_console(context: AdminContext) -> web.Application:
    """The console's sub-application, to mount at :data:`PREFIX`."""
    app = web.Application(middlewares=[html_errors, console_guard])
    app[CONTEXT] = context
    app[SIGNER] = Signer.for_token(context.token)
    setup_templates(app)
    app.router.add_get("/", overview)
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    endpoints.add_routes(app)
    test_sends.add_routes(app)
    events.add_routes(app)
    dead_letters.add_routes(app)
    app.router.add_static("/static/", STATIC, name="static", append_version=True)
    return app
