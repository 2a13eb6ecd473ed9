"""The SQL both backends share, joined from one mixin per domain; each backend supplies its
connection, dialect and migrations (``sqlite.py``, ``postgres.py``).

| domain | module | tables |
|---|---|---|
| events | ``events.py`` | events, devices, quarantine, ingest_workers (and the roll-ups' upserts) |
| roll-ups | ``rollupsql.py`` | rollups: paged reads, maintenance |
| retention | ``retention.py`` | purges (and deletes from the above) |
| registry | ``registry.py`` | enrol_tokens, enrolments, revoked_certs |
| fusion | ``fusion.py`` | cube, imports, model_state, anomalies |
| access | ``access.py`` | users, api_tokens |
| audit | ``audit.py`` | audit |
| campaigns | ``campaigns.py`` | campaigns |
| throttle | ``throttle.py`` | throttle (login attempts, shared by every process) |
| tags | ``tags.py`` | device_tags |
"""

from __future__ import annotations

from hub.storage.access import AccessSql
from hub.storage.audit import AuditSql
from hub.storage.campaigns import CampaignSql
from hub.storage.events import EventSql, clock_skew_s, index_columns
from hub.storage.fusion import FusionSql
from hub.storage.registry import RegistrySql
from hub.storage.retention import RetentionSql
from hub.storage.rollupsql import RollupSql
from hub.storage.tags import TagSql
from hub.storage.throttle import ThrottleSql

__all__ = ["SqlStore", "clock_skew_s", "index_columns"]


class SqlStore(
    EventSql,
    RollupSql,
    RetentionSql,
    RegistrySql,
    FusionSql,
    AccessSql,
    AuditSql,
    CampaignSql,
    ThrottleSql,
    TagSql,
):
    """Every domain over one connection; subclasses set ``backend``, the dialect and the connection."""
