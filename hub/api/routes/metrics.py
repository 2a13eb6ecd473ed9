"""``GET /metrics``: the Prometheus exposition (hub and fleet), for the city's monitoring to scrape."""

from __future__ import annotations

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from hub.api.deps import SettingsDep, StoreDep
from hub.metrics import CONTENT_TYPE, render

__all__ = ["metrics", "router"]

router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    summary="Prometheus metrics (scope fleet:read)",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {}}}},
)
async def metrics(store: StoreDep, settings: SettingsDep) -> Response:
    """Hub and fleet metrics in Prometheus' text format; docs/operations.md lists them."""
    state = settings.hub_state()
    body = await run_in_threadpool(render, store, state.pki if state is not None else None)
    return Response(body, media_type=CONTENT_TYPE)
