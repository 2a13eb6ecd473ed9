"""A small client of the hub's API for CLI commands: ``--hub URL`` and a bearer token."""

from __future__ import annotations

import argparse
import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from vigie.exceptions import VigieError

__all__ = ["HubClient", "add_hub_options"]


def add_hub_options(parser: argparse.ArgumentParser) -> None:
    """``--hub`` (env VIGIE_HUB_URL) and ``--token-file`` (else env VIGIE_HUB_TOKEN)."""
    parser.add_argument(
        "--hub",
        default=os.environ.get("VIGIE_HUB_URL"),
        help="The hub's API, e.g. https://hub.example.org:8000 (env VIGIE_HUB_URL): the hub runs the "
        "campaign. Without it the command works on the store (--db) directly.",
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        default=None,
        help="File holding an operator's API token (`vigie hub user token NAME`); else env VIGIE_HUB_TOKEN.",
    )


class HubClient:
    """JSON over HTTP(S) with the caller's token; errors become :class:`VigieError` with the hub's words."""

    def __init__(self, url: str, token: str | None, *, timeout_s: float = 30.0) -> None:
        self.url, self.token, self.timeout_s = url.rstrip("/"), token, timeout_s

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> HubClient:
        token = os.environ.get("VIGIE_HUB_TOKEN")
        if args.token_file is not None:
            try:
                token = args.token_file.read_text().strip()
            except OSError as exc:
                raise VigieError(f"--token-file {args.token_file}: {exc.strerror}") from None
        return cls(args.hub, token)

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)  # noqa: S310 (the operator's hub)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            try:
                detail = json.loads(exc.read()).get("detail")
            except (ValueError, AttributeError):
                detail = exc.reason
            hint = " (--token-file or VIGIE_HUB_TOKEN)" if exc.code == 401 else ""
            raise VigieError(f"hub {method} {path}: {exc.code} {detail}{hint}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise VigieError(f"--hub {self.url}: cannot reach the hub ({reason}); is it running?") from None
