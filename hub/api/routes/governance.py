"""For the data-protection officer: audit log, GDPR records, retention report; users, for admins."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel, Field

from hub.api.deps import EPOCH_MAX, SettingsDep, StoreDep
from hub.config import HubSettings
from hub.storage import Store

__all__ = ["AuditPublic", "audit", "dpia", "records", "retention", "router", "users"]

router = APIRouter(prefix="/v1", tags=["governance"])
gdpr_router = APIRouter(prefix="/v1", tags=["governance"])
users_router = APIRouter(prefix="/v1", tags=["governance"])


class AuditPublic(BaseModel):
    data: list[dict[str, Any]] = Field(
        description="Entries: seq, ts, username, role, method, path, params, "
        "purpose, status, prev_hash, hash."
    )
    count: int


@router.get("/audit", response_model=AuditPublic, summary="Search the audit log (DPO)")
def audit(
    store: StoreDep,
    username: Annotated[str | None, Query(description="Only this user.")] = None,
    path: Annotated[str | None, Query(description="Only paths starting with this.")] = None,
    since: Annotated[float | None, Query(ge=0, le=EPOCH_MAX, description="From (UTC epoch s).")] = None,
    until: Annotated[float | None, Query(ge=0, le=EPOCH_MAX, description="Before (UTC epoch s).")] = None,
    after: Annotated[int, Query(ge=0, description="Entries after this seq (paging).")] = 0,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> AuditPublic:
    """Who called what, when, with which parameters and stated purpose, and what they got (status)."""
    rows = store.list_audit(after=after, limit=limit, username=username, path=path, since=since, until=until)
    return AuditPublic(data=rows, count=len(rows))


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
def users(store: StoreDep) -> dict[str, Any]:
    rows = store.list_users()
    return {"data": rows, "count": len(rows)}
