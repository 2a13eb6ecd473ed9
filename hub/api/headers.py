"""Security headers on every response the hub sends (issue 17): a strict CSP, nosniff, no referrer.

A pure ASGI middleware rather than Starlette's ``BaseHTTPMiddleware``: it only adds headers to
``http.response.start``, so streamed bodies (the live event stream) pass through untouched.

The dashboard needs nothing but its own files: ``default-src 'self'`` with no inline script or style
(its JavaScript builds DOM nodes and sets styles through the CSSOM, which the CSP allows). When the
city sets its own tile server (``tile_url``), that one origin is added to ``img-src``, nothing else.
The OpenAPI pages (/docs, /redoc) are served from the hub's own copies of Swagger UI and ReDoc
(``hub/vendor_assets.py``), started by a script file, never a CDN or an inline script: /docs gets the
dashboard's policy; /redoc also allows inline *style* elements, which ReDoc's styled-components
inserts (never inline script).
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["DASHBOARD_CSP", "DOCS_CSP", "REDOC_CSP", "SecurityHeadersMiddleware", "security_headers"]

DASHBOARD_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
#: ReDoc's styled-components writes <style> elements: inline style, never inline script.
REDOC_CSP = (
    DASHBOARD_CSP.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")
    + "; worker-src 'self' blob:"
)
DOCS_CSP = DASHBOARD_CSP
Headers = list[tuple[bytes, bytes]]


def security_headers(path: str, img_origins: tuple[str, ...] = ()) -> Headers:
    """The headers for a response to ``path`` (pure: the middleware only appends them).

    ``img_origins``: the city's tile server origin(s), allowed as image sources on the dashboard.
    """
    csp = REDOC_CSP if path == "/redoc" else DASHBOARD_CSP
    if img_origins:
        csp = csp.replace("img-src 'self' data:", "img-src 'self' data: " + " ".join(img_origins))
    return [
        (b"content-security-policy", csp.encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"x-frame-options", b"DENY"),  # frame-ancestors for browsers that predate CSP 2
        (b"cross-origin-opener-policy", b"same-origin"),
    ]


def _merge(existing: Iterable[tuple[bytes, bytes]], added: Headers) -> Headers:
    """``added`` replaces any header of the same name (a route cannot weaken the policy by accident)."""
    names = {name for name, _ in added}
    return [(k, v) for k, v in existing if k.lower() not in names] + added


class SecurityHeadersMiddleware:
    """Adds :func:`security_headers` to every HTTP response, errors and 404s included."""

    def __init__(self, app: ASGIApp, img_origins: tuple[str, ...] = ()) -> None:
        self.app = app
        self.img_origins = img_origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        added = security_headers(scope.get("path", ""), self.img_origins)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": _merge(message.get("headers", []), added)}
            await send(message)

        await self.app(scope, receive, send_with_headers)
