"""The audit log: every API request, append-only and hash-chained.

Each entry stores the hash of the previous one and its own:
``hash = SHA-256(prev_hash ‖ canonical JSON of the entry)``. Changing an entry breaks
its own hash; deleting one breaks the next entry's link; the database refuses
UPDATE and DELETE on the table anyway (triggers). Deleting the newest entries
leaves a valid shorter chain: compare with a head noted elsewhere
(``vigie hub audit verify --head SEQ:HASH``; the hub logs the head every 1,000 entries).

Sensitive routes require the caller to state a purpose (``X-Purpose`` header or
``purpose`` query parameter), recorded with the entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException, Request, status
from starlette.concurrency import run_in_threadpool
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.responses import JSONResponse, Response

from hub.storage import Store

__all__ = ["AuditMiddleware", "ChainReport", "chain_hash", "require_purpose", "verify_chain"]

log = logging.getLogger(__name__)
GENESIS = "0" * 64
_SECRET_PARAMS = {"token", "password", "access_token", "client_secret"}
_FIELDS = ("ts", "username", "role", "method", "path", "params", "purpose", "status")


def chain_hash(prev: str, entry: dict[str, Any]) -> str:
    """The entry's hash, bound to the previous one."""
    body = json.dumps({k: entry[k] for k in _FIELDS}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256((prev + body).encode()).hexdigest()


@dataclass(frozen=True)
class ChainReport:
    """``ok``, or the first entry where the chain breaks and why."""

    entries: int
    head_seq: int
    head_hash: str
    ok: bool
    broken_at: int | None = None
    reason: str = ""


def verify_chain(store: Store, *, head: tuple[int, str] | None = None, batch: int = 5000) -> ChainReport:
    """Walk the whole log and check every link (and the expected head, when given)."""
    prev, last_seq, count, after = GENESIS, 0, 0, 0
    while True:
        rows = store.list_audit(after=after, limit=batch)
        if not rows:
            break
        for row in rows:
            entry = {k: row[k] for k in _FIELDS}
            if row["prev_hash"] != prev:
                return ChainReport(
                    count,
                    last_seq,
                    prev,
                    False,
                    row["seq"],
                    f"entry {row['seq']} does not follow entry {last_seq}: an entry between "
                    "them was deleted, or this one was altered",
                )
            if chain_hash(prev, entry) != row["hash"]:
                return ChainReport(
                    count,
                    last_seq,
                    prev,
                    False,
                    row["seq"],
                    f"entry {row['seq']} was modified after it was written",
                )
            prev, last_seq, count = row["hash"], row["seq"], count + 1
        after = rows[-1]["seq"]
    if head is not None:
        seq, digest = head
        if last_seq < seq:
            return ChainReport(
                count,
                last_seq,
                prev,
                False,
                last_seq + 1,
                f"the log ends at entry {last_seq} but entry {seq} was noted: entries were removed",
            )
        entries = store.list_audit(after=seq - 1, limit=1)
        if not entries or entries[0]["hash"] != digest:
            return ChainReport(count, last_seq, prev, False, seq, f"entry {seq} does not have the noted hash")
    return ChainReport(count, last_seq, prev, True)


def require_purpose(request: Request) -> str:
    """Sensitive routes: the caller must say why (``X-Purpose`` or ``?purpose=``), 3 to 200 characters."""
    purpose = request.headers.get("x-purpose") or request.query_params.get("purpose") or ""
    if not 3 <= len(purpose.strip()) <= 200:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            "state the purpose of this request (header X-Purpose or query parameter purpose, 3-200 "
            "characters), e.g. 'X-Purpose: weekly tranquillity report, 2nd arrondissement'; it is recorded "
            "in the audit log",
        )
    return purpose.strip()


class AuditMiddleware(BaseHTTPMiddleware):
    """Append one audit entry per request, after the response is known; fail closed if it cannot."""

    def __init__(self, app: Any, skip: tuple[str, ...] = ("/healthz", "/dashboard", "/favicon.ico")) -> None:
        super().__init__(app)
        self.skip = skip
        self._written = 0

    async def dispatch(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if request.url.path.startswith(self.skip):
            return await call_next(request)
        response = await call_next(request)
        principal = getattr(request.state, "principal", None)
        params = {k: ("***" if k in _SECRET_PARAMS else v) for k, v in request.query_params.items()}
        entry = {
            "ts": round(time.time(), 3),
            "username": getattr(principal, "username", None),
            "role": getattr(principal, "role", None),
            "method": request.method,
            "path": request.url.path,
            "params": params,
            "purpose": request.headers.get("x-purpose") or request.query_params.get("purpose"),
            "status": response.status_code,
        }
        store: Store = request.app.state.store
        try:
            seq, digest = await run_in_threadpool(store.append_audit, entry, chain_hash)
        except Exception:
            log.exception("audit log unavailable: request refused")
            return JSONResponse({"detail": "audit log unavailable; request not served"}, status_code=503)
        self._written += 1
        if seq % 1000 == 0:
            log.info("audit head", extra={"seq": seq, "hash": digest})
        return response
