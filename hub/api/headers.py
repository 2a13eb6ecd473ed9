"""Security headers on every response the hub sends (issue 17): a strict CSP, nosniff, no referrer.

A pure ASGI middleware rather than Starlette's ``BaseHTTPMiddleware``: it only adds headers to
``http.response.start``, so streamed bodies (the live event stream) pass through untouched.

The dashboard needs nothing but its own files: ``default-src 'self'`` with no inline script or style
(its JavaScript builds DOM nodes and sets styles through the CSSOM, which the CSP allows). The
OpenAPI pages (/docs, /redoc) are FastAPI's: they load Swagger UI / ReDoc from a CDN and start it
with an inline script, so they get a CSP of their own that allows exactly that and still no framing.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["DASHBOARD_CSP", "DOCS_CSP", "SecurityHeadersMiddleware", "security_headers"]

DASHBOARD_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_CDN = "https://cdn.jsdelivr.net"
DOCS_CSP = (
    f"default-src 'self'; script-src 'self' 'unsafe-inline' {_CDN}; style-src 'self' 'unsafe-inline' {_CDN}; "
    f"img-src 'self' data: https://fastapi.tiangolo.com; worker-src 'self' blob:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
Headers = list[tuple[bytes, bytes]]
_DOCS_PATHS = frozenset({"/docs", "/redoc", "/docs/oauth2-redirect"})


def security_headers(path: str) -> Headers:
    """The headers for a response to ``path`` (pure: the middleware only appends them)."""
    csp = DOCS_CSP if path in _DOCS_PATHS else DASHBOARD_CSP
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

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        added = security_headers(scope.get("path", ""))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": _merge(message.get("headers", []), added)}
            await send(message)

        await self.app(scope, receive, send_with_headers)
