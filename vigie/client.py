"""A Python client for the hub's analyst API: log in, page through lists, get DataFrames.

Standard library only (``urllib``), so that it installs anywhere; DataFrames need
pandas, imported when asked for (``pip install 'vigie[client]'``). Every list is read
page by page through the API's ``next`` links, so a cube of any size comes back whole.

    from vigie.client import HubClient

    hub = HubClient.login("http://hub:8000", "alice", "…", purpose="monthly report, 1st arr.")
    rows = hub.cube(bucket="day", zone="poly:NOAILLES", since="2026-01-01", until="2026-02-01")
    frame = hub.cube_frame(bucket="day", zone="poly:NOAILLES", since="2026-01-01", until="2026-02-01")

Times may be ``datetime``, ``date``, ISO 8601 strings or epoch seconds. Suppressed
buckets (under k, or hidden with them) come back with ``n`` = None (NaN in a DataFrame):
a gap, never a zero.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from datetime import date, datetime
from typing import Any

from vigie.exceptions import VigieError

__all__ = ["ClientError", "HubClient", "Time", "to_dataframe"]

Time = datetime | date | str | int | None
DEFAULT_TIMEOUT_S = 60.0


class ClientError(VigieError):
    """The hub refused a request, or could not be reached.

    Attributes:
        status: the HTTP status (0 when the hub could not be reached).
        url: what was asked.
        detail: the hub's ``detail`` (a sentence, or a list of parameter errors).
    """

    def __init__(self, status: int, url: str, detail: Any) -> None:
        self.status = status
        self.url = url
        self.detail = detail
        super().__init__(f"{url}: HTTP {status}: {_detail_text(detail)}" if status else f"{url}: {detail}")


def _detail_text(detail: Any) -> str:
    if isinstance(detail, list):
        return "; ".join(
            f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg')}" if isinstance(d, dict) else str(d)
            for d in detail
        )
    return str(detail)


def _base(url: str) -> str:
    """The hub's base URL, http or https only (urllib would also open file: and ftp: URLs)."""
    if urllib.parse.urlsplit(url).scheme not in {"http", "https"}:
        raise ValueError(f"hub URL {url!r}: give http://host:port or https://host (no other scheme)")
    return url.rstrip("/")


def _time(value: Time) -> str | None:
    """A time as the API takes it (ISO 8601 or epoch seconds)."""
    if value is None:
        return None
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def _params(params: Mapping[str, Any]) -> dict[str, str]:
    out = {}
    for key, value in params.items():
        if value is None:
            continue
        if key in {"since", "until"}:
            out[key] = _time(value) or ""
        elif isinstance(value, list | tuple | set):
            out[key] = ",".join(str(v) for v in value)
        else:
            out[key] = str(value)
    return out


def _check_purpose(purpose: str) -> None:
    if not 3 <= len(purpose) <= 200:
        raise ValueError(
            f"purpose {purpose!r}: say why you query the hub in 3-200 characters "
            "(e.g. 'monthly tranquillity report, 2nd arrondissement'); it goes in the audit log"
        )


class HubClient:
    """One analyst's session with a hub: a token and a stated purpose (recorded in the audit log)."""

    def __init__(self, url: str, token: str, *, purpose: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        _check_purpose(purpose)
        self.url = _base(url)
        self.token = token
        self.purpose = purpose
        self.timeout_s = timeout_s
        #: The last page's fields other than its rows (``k``, ``tz``, ``since``...).
        self.last: dict[str, Any] = {}

    @classmethod
    def login(
        cls, url: str, username: str, password: str, *, purpose: str, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> HubClient:
        """Log in with a password (OAuth2 password flow); the token lasts the hub's login TTL.

        Raises:
            ClientError: wrong credentials (401), throttled (429), or no hub at ``url``.
            ValueError: a purpose outside 3-200 characters (checked before logging in).
        """
        _check_purpose(purpose)  # before logging in: no token made for a session that cannot query
        body = urllib.parse.urlencode({"username": username, "password": password}).encode()
        token_url = f"{_base(url)}/v1/auth/token"
        request = urllib.request.Request(token_url, data=body, method="POST")  # noqa: S310  (_base: http(s))
        answer = _send(request, timeout_s)
        return cls(url, str(answer["access_token"]), purpose=purpose, timeout_s=timeout_s)

    def raw(self, path: str, params: Mapping[str, Any] | None = None) -> bytes:
        """The body of ``GET path`` (``path`` may carry its own query, as ``next`` links do)."""
        query = urllib.parse.urlencode(_params(params or {}))
        url = f"{self.url}{path}" + (("&" if "?" in path else "?") + query if query else "")
        headers = {"Authorization": f"Bearer {self.token}", "X-Purpose": self.purpose}
        request = urllib.request.Request(url, headers=headers)  # noqa: S310  (self.url: http(s), from _base)
        return _fetch(request, self.timeout_s)

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        """``GET path`` as JSON.

        Raises:
            ClientError: any answer other than 2xx, with the hub's explanation.
        """
        return json.loads(self.raw(path, params))

    def pages(
        self, path: str, params: Mapping[str, Any] | None = None, *, key: str = "data"
    ) -> Iterator[Any]:
        """Every item of a list route, following its ``next`` links until the last page."""
        body = self.get(path, params)
        while True:
            self.last = {k: v for k, v in body.items() if k != key}
            yield from body[key]
            link = body.get("next")
            if not link:
                return
            body = self.get(link)

    def cube(
        self,
        *,
        bucket: str = "day",
        since: Time = None,
        until: Time = None,
        zone: str | list[str] | None = None,
        source: str | list[str] | None = None,
        category: str | list[str] | None = None,
        zone_kind: str | None = None,
        page_size: int = 10_000,
    ) -> list[dict[str, Any]]:
        """Cube rows (zone, start, end, bucket, source, category, n, suppressed), all pages."""
        params = {"bucket": bucket, "since": since, "until": until, "zone": zone, "source": source,
                  "category": category, "zone_kind": zone_kind, "limit": page_size}  # fmt: skip
        return list(self.pages("/v1/cube", params))

    def cube_frame(self, **query: Any) -> Any:
        """:meth:`cube` as a pandas DataFrame, ``start``/``end`` as times in the city's zone."""
        rows = self.cube(**query)
        return to_dataframe(rows, self.last.get("tz"))

    def rollups(self, **query: Any) -> list[dict[str, Any]]:
        """Hourly roll-ups per camera place (``site``, ``device``, ``place``, ``metric``, times)."""
        return list(self.pages("/v1/rollups", query))

    def events(self, **query: Any) -> list[dict[str, Any]]:
        """Device events, newest first (``site``, ``device``, ``kind``, ``zone``, times)."""
        return list(self.pages("/v1/events", query))

    def anomalies(self, **query: Any) -> list[dict[str, Any]]:
        """Zone-hours far above their baseline, on hours the cube serves."""
        return list(self.pages("/v1/anomalies", query))

    def export(self, fmt: str = "parquet", **query: Any) -> bytes:
        """The cube export as bytes: ``parquet``, ``csv`` or ``geojson``."""
        if fmt not in {"parquet", "csv", "geojson"}:
            raise ValueError(f"export format {fmt!r}: choose parquet, csv or geojson")
        return self.raw(f"/v1/exports/cube.{fmt}", query)


def to_dataframe(rows: list[dict[str, Any]], tz: str | None = None) -> Any:
    """Rows as a pandas DataFrame; each ``<name>_iso`` column becomes ``<name>``, a time in ``tz`` (UTC).

    Raises:
        ImportError: pandas is not installed, with the command that installs it.
    """
    try:
        import pandas as pd
    except ImportError:
        raise ImportError(
            "DataFrames need pandas, which is not installed: pip install 'vigie[client]' "
            "(or use the rows as they are: a list of dicts)"
        ) from None
    frame = pd.DataFrame(rows)
    for column in [c for c in frame.columns if c.endswith("_iso")]:
        name = column.removesuffix("_iso")
        frame[name] = pd.to_datetime(frame[column], utc=True).dt.tz_convert(tz or "UTC")
        frame = frame.drop(columns=column)
    if "n" in frame.columns:
        frame["n"] = pd.to_numeric(frame["n"], errors="coerce")  # suppressed: NaN, a gap
    return frame


def _fetch(request: urllib.request.Request, timeout_s: float) -> bytes:
    url = request.full_url
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:  # noqa: S310  (the hub's URL)
            body: bytes = answer.read()
            return body
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            detail = json.loads(raw).get("detail", raw.decode(errors="replace"))
        except (ValueError, AttributeError):
            detail = raw.decode(errors="replace")[:300]
        raise ClientError(exc.code, url, detail) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ClientError(0, url, f"no answer ({reason}): is the hub running at this address?") from None


def _send(request: urllib.request.Request, timeout_s: float) -> Any:
    return json.loads(_fetch(request, timeout_s))
