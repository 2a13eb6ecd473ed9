"""For the data-protection officer: audit log, GDPR records, retention report; users, for admins."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel, Field

from hub.api.deps import SettingsDep, StoreDep
from hub.api.paging import CursorQuery, decode_cursor, encode_cursor, next_link, page_offset
from hub.api.schemas import NEXT, NEXT_CURSOR
from hub.api.times import SinceQuery, UntilQuery, with_iso
from hub.config import HubSettings
from hub.storage import Store

__all__ = ["AuditPublic", "audit", "dpia", "records", "retention", "router", "users"]

router = APIRouter(prefix="/v1", tags=["governance"])
gdpr_router = APIRouter(prefix="/v1", tags=["governance"])
users_router = APIRouter(prefix="/v1", tags=["governance"])


class AuditPublic(BaseModel):
    data: list[dict[str, Any]] = Field(
        description="Entries: seq, ts, username, role, method, path, params, "
        "purpose, status, prev_hash, hash; ts_iso is ts in ISO 8601 (UTC)."
    )
    count: int = Field(description="Entries in this page.")
    next_cursor: str | None = Field(default=None, description=NEXT_CURSOR)
    next: str | None = Field(default=None, description=NEXT)


@router.get("/audit", response_model=AuditPublic, summary="Search the audit log (DPO)")
def audit(
    store: StoreDep,
    request: Request,
    username: Annotated[str | None, Query(description="Only this user.")] = None,
    path: Annotated[str | None, Query(description="Only paths starting with this.")] = None,
    since: SinceQuery = None,
    until: UntilQuery = None,
    after: Annotated[int, Query(ge=0, le=2**63 - 1, description="Entries after this seq (paging).")] = 0,
    limit: Annotated[int, Query(ge=1, le=5000, description="Page size.")] = 500,
    cursor: CursorQuery = None,
) -> AuditPublic:
    """Who called what, when, with which parameters and stated purpose, and what they got (status)."""
    decoded = decode_cursor(cursor, (int,))
    start = int(decoded[0]) if decoded else after
    rows = store.list_audit(
        after=start, limit=limit + 1, username=username, path=path, since=since, until=until
    )
    more = encode_cursor((int(rows[limit - 1]["seq"]),)) if len(rows) > limit else None
    rows = [with_iso(r, ("ts",), None) for r in rows[:limit]]
    return AuditPublic(data=rows, count=len(rows), next_cursor=more, next=next_link(request, more))


def _facts(settings: HubSettings, store: Store) -> Any:
    """The facts the GDPR documents are written from: the live store and settings."""
    from hub.gdpr import collect_facts

    return collect_facts(
        store,
        settings.retention,
        settings.k,
        controller=settings.controller,
        dpo_contact=settings.dpo_contact,
    )


@gdpr_router.get(
    "/gdpr/records",
    summary="Record of processing activities (GDPR art. 30), from the live configuration",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/markdown": {}}}},
)
def records(settings: SettingsDep, store: StoreDep) -> Response:
    from hub.gdpr import record_of_processing

    return PlainTextResponse(record_of_processing(_facts(settings, store)), media_type="text/markdown")


@gdpr_router.get(
    "/gdpr/dpia",
    summary="Data-protection impact assessment draft (GDPR art. 35(7))",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/markdown": {}}}},
)
def dpia(settings: SettingsDep, store: StoreDep) -> Response:
    from hub.gdpr import dpia_draft

    return PlainTextResponse(dpia_draft(_facts(settings, store)), media_type="text/markdown")


@gdpr_router.get("/gdpr/retention", summary="Retention report: the policy and what was purged when")
def retention(settings: SettingsDep, store: StoreDep) -> dict[str, Any]:
    return {"policy": settings.retention.model_dump(), "purges": store.list_purges(1000)}


@users_router.get("/users", summary="Users and their roles (admin)")
def users(
    store: StoreDep,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=10_000, description="Page size.")] = 1000,
    cursor: CursorQuery = None,
) -> dict[str, Any]:
    rows, more = page_offset(store.list_users(), cursor, limit)
    return {"data": rows, "count": len(rows), "next_cursor": more, "next": next_link(request, more)}
