"""The SQL both backends share, joined from one mixin per domain; each backend supplies its
connection, dialect and migrations (``sqlite.py``, ``postgres.py``).

| domain | module | tables |
|---|---|---|
| events | ``events.py`` | event_streams, events_hot, event_segments, rollups, devices, quarantine, |
| | | ingest_workers |
| | ``eventpages.py`` | (pages of events: hot rows and segments merged, newest first) |
| | ``compaction.py`` | (packs event_segments; converts the old events at migration 11) |
| roll-ups | ``rollupsql.py`` | rollups: paged reads, maintenance |
| retention | ``retention.py`` | purges (and deletes from the above) |
| registry | ``registry.py`` | enrol_tokens, enrolments, revoked_certs |
| fusion | ``fusion.py`` | cube, imports, model_state, anomalies |
| access | ``access.py`` | users, api_tokens |
| audit | ``audit.py`` | audit |
| campaigns | ``campaigns.py`` | campaigns |
| throttle | ``throttle.py`` | throttle (login attempts, shared by every process) |
| tags | ``tags.py`` | device_tags |
| buckets | ``buckets.py`` | buckets (rate limits, shared by every process) |
| leases | ``leases.py`` | job_leases (which process runs each periodic job) |
"""

from __future__ import annotations

from hub.storage.access import AccessSql
from hub.storage.audit import AuditSql
from hub.storage.buckets import BucketSql
from hub.storage.campaigns import CampaignSql
from hub.storage.compaction import CompactionSql
from hub.storage.eventpages import EventPageSql
from hub.storage.events import clock_skew_s, index_columns
from hub.storage.fusion import FusionSql
from hub.storage.leases import LeaseSql
from hub.storage.registry import RegistrySql
from hub.storage.retention import RetentionSql
from hub.storage.rollupsql import RollupSql
from hub.storage.tags import TagSql
from hub.storage.throttle import ThrottleSql

__all__ = ["SqlStore", "clock_skew_s", "index_columns"]


class SqlStore(
    CompactionSql,
    EventPageSql,
    RollupSql,
    RetentionSql,
    RegistrySql,
    FusionSql,
    AccessSql,
    AuditSql,
    CampaignSql,
    ThrottleSql,
    TagSql,
    BucketSql,
    LeaseSql,
):
    """Every domain over one connection; subclasses set ``backend``, the dialect and the connection."""
