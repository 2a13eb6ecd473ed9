"""Cursor pagination shared by every list route: opaque cursors, a ``next`` link, clear 422s.

A cursor is the sort key of the last row of a page (keyset: a new row never shifts the
pages after it), or an offset for lists the hub computes whole on each request, base64url
JSON either way. Clients pass it back unchanged; anything else is refused with 422 and
the fix, never a 500 (``tests/security`` fuzzes every parameter).
"""

from __future__ import annotations

import base64
import binascii
import json
from bisect import bisect_right
from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypeVar
from urllib.parse import urlencode

from fastapi import HTTPException, Query, Request

__all__ = [
    "CURSOR_MAX_LEN",
    "CursorQuery",
    "Key",
    "bad_cursor",
    "decode_cursor",
    "encode_cursor",
    "next_link",
    "page_after",
    "page_offset",
]

CURSOR_MAX_LEN = 512
Key = tuple[Any, ...]
T = TypeVar("T")

CursorQuery = Annotated[
    str | None,
    Query(
        max_length=CURSOR_MAX_LEN,
        description="`next_cursor` of the previous page, unchanged (or follow its `next` link); "
        "leave out for the first page.",
    ),
]


def bad_cursor(cursor: str, why: str) -> HTTPException:
    """422 in FastAPI's own shape, naming the parameter, the value and the fix."""
    shown = cursor if len(cursor) <= 40 else cursor[:40] + "…"
    return HTTPException(
        422,
        detail=[
            {
                "loc": ["query", "cursor"],
                "type": "value_error",
                "msg": f"cursor {shown!r} is not one this API returned ({why}): pass the previous page's "
                "`next_cursor` unchanged, or leave `cursor` out for the first page",
            }
        ],
    )


def encode_cursor(key: Key) -> str:
    """The opaque form of a sort key."""
    raw = json.dumps(list(key), separators=(",", ":"), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None, shape: Sequence[type]) -> Key | None:
    """The sort key in ``cursor``, checked against ``shape`` (one type per element).

    Raises:
        HTTPException: 422 for anything this API did not hand out.
    """
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw.decode())
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise bad_cursor(cursor, "not base64url JSON") from None
    if not isinstance(value, list) or len(value) != len(shape):
        raise bad_cursor(cursor, f"expected {len(shape)} values")
    for item, kind in zip(value, shape, strict=True):
        # bool is an int to Python; a cursor never holds one.
        if type(item) is not kind:
            raise bad_cursor(cursor, f"{item!r} is not a {kind.__name__}")
        if isinstance(item, int) and not 0 <= item < 2**63:
            raise bad_cursor(cursor, f"{item} is out of range")
    return tuple(value)


def next_link(request: Request, cursor: str | None) -> str | None:
    """The same request with ``cursor`` set: path and query, relative to the hub (proxy-safe)."""
    if cursor is None:
        return None
    params = [(k, v) for k, v in request.query_params.multi_items() if k != "cursor"]
    params.append(("cursor", cursor))
    return f"{request.url.path}?{urlencode(params)}"


def page_after(
    rows: Sequence[T], key: Callable[[T], Key], after: Key | None, limit: int
) -> tuple[list[T], str | None]:
    """Rows (sorted by ``key``) after ``after``, at most ``limit``, and the cursor of the next page."""
    # Rows are sorted by the key, and decode_cursor checked the cursor's types against it.
    start = 0 if after is None else bisect_right(rows, after, key=key)
    page = list(rows[start : start + limit])
    more = start + limit < len(rows)
    return page, encode_cursor(key(page[-1])) if more and page else None


def page_offset(rows: Sequence[T], cursor: str | None, limit: int) -> tuple[list[T], str | None]:
    """A page of a list computed whole on each request, with an offset cursor."""
    decoded = decode_cursor(cursor, (int,))
    offset = int(decoded[0]) if decoded else 0
    page = list(rows[offset : offset + limit])
    end = offset + len(page)
    return page, encode_cursor((end,)) if end < len(rows) else None
