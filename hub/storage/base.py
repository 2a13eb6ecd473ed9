"""What the hub needs from a storage backend, one small protocol per domain, and the shapes they exchange.

:class:`Store` is their union: what ``open_store`` returns. A caller that needs one domain only
(the campaign runner, the audit log) may ask for that domain's protocol instead.

Longer than 400 lines because it is the one place where every domain's contract is written down:
the protocols and the query shapes they share (splitting them would scatter the storage contract
that ``tests/hub``'s contract suite checks for both backends).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Generic, Literal, NotRequired, Protocol, TypedDict, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from vigie import wire

__all__ = [
    "CUBE_LEVELS",
    "QUARANTINE_KEEP_BYTES",
    "AccessStore",
    "AnomalyKey",
    "ApiTokenGrant",
    "AuditStore",
    "BucketStore",
    "Campaign",
    "CampaignLogEntry",
    "CampaignState",
    "CampaignStateStore",
    "CubeKey",
    "CubeLevel",
    "CubeQuery",
    "CubeRow",
    "EventQuery",
    "EventStore",
    "FusionStore",
    "JobClaim",
    "JobLeaseStore",
    "Page",
    "QuarantineRecord",
    "RegistryStore",
    "RenewalStore",
    "Retention",
    "RetentionStore",
    "RollupKey",
    "RollupQuery",
    "Store",
    "StoreAdmin",
    "TagStore",
    "ThrottleStore",
    "User",
    "UserSummary",
    "walk_anomalies",
    "walk_cube",
    "walk_pages",
    "walk_rollups",
]

#: Bytes of a quarantined payload that are kept for the operator to inspect.
QUARANTINE_KEEP_BYTES = 1024


@dataclass(frozen=True, slots=True)
class EventQuery:
    """Filters for listing events; ``cursor`` is the (window start, id) of the previous page's last event."""

    site: str | None = None
    device: str | None = None
    kind: str | None = None
    place: str | None = None
    since: int | None = None
    until: int | None = None
    limit: int = 100
    cursor: tuple[int, str] | None = None


K = TypeVar("K")
#: The sort key of a roll-up row, (hour, site, device, place, metric): rows come in this order.
RollupKey = tuple[int, str, str, str, str]
#: The sort key of a cube row, (hour, zone, source, category): rows come in this order.
CubeKey = tuple[int, str, str, str]
#: The sort key of an anomaly, (hour, p, zone, source, category): hour descending, the rest ascending.
AnomalyKey = tuple[int, float, str, str, str]


@dataclass(frozen=True, slots=True)
class Page(Generic[K]):
    """Rows of a list the store answers in pages, and where the next page starts.

    ``next`` is the sort key of the last row when more rows match (pass it as the query's
    ``after``), None on the last page: a list is never cut without saying so.
    """

    rows: list[dict[str, Any]]
    next: K | None


@dataclass(frozen=True, slots=True)
class RollupQuery:
    """Filters for hourly roll-ups; ``metric`` may end with ``*`` (``peak:*``).

    ``after`` is the (hour, site, device, place, metric) of the last row of the previous
    page: rows come in that order, after it.
    """

    site: str | None = None
    device: str | None = None
    place: str | None = None
    metric: str | None = None
    since: int | None = None
    until: int | None = None
    limit: int = 1000
    after: RollupKey | None = None


@dataclass(frozen=True, slots=True)
class QuarantineRecord:
    """A message that failed validation, kept for the operator."""

    topic: str
    site: str | None
    device: str | None
    field: str
    reason: str
    payload: bytes
    received_at: float


class Retention(BaseModel):
    """How long each data class is kept, in days (None: forever)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    events_days: float | None = Field(default=90, gt=0, description="Raw events (by window start).")
    rollups_days: float | None = Field(default=730, gt=0, description="Hourly roll-ups.")
    quarantine_days: float | None = Field(default=30, gt=0, description="Quarantined messages.")


@dataclass(frozen=True)
class CubeRow:
    """``n`` of ``category`` from ``source`` in ``zone`` (``h3:…`` or ``poly:…``) during the hour ``hour``."""

    zone: str
    hour: int
    source: str
    category: str
    n: float
    span_h: int = 1


CubeLevel = Literal["hour", "day", "week", "month"]
#: The cube's pre-aggregated levels (``hub/storage/cubelevels.py``): UTC days, ISO weeks, months of weeks.
CUBE_LEVELS: tuple[CubeLevel, ...] = ("day", "week", "month")


@dataclass(frozen=True)
class CubeQuery:
    """Filters on the cube: zones by prefix (``h3:``, ``poly:``) or exact keys, sources, categories, hours.

    ``level`` other than ``hour`` reads the pre-aggregated buckets (UTC calendar): rows then carry the
    bucket's start as ``hour`` and its length in hours as ``span_h``. ``after`` is the sort key
    (hour, zone, source, category) of the previous page's last row.
    """

    zone_prefix: str | None = None
    zones: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    start: int | None = None
    end: int | None = None
    limit: int = 100_000
    level: CubeLevel = "hour"
    after: CubeKey | None = None


CampaignState = Literal["running", "paused", "done", "halted", "aborted"]


class CampaignLogEntry(TypedDict):
    """One line of a campaign's history: a wave started or judged, an operator's action."""

    at: float
    event: str
    why: str
    by: NotRequired[str]  # the runner (hub process) that wrote it: hub/campaign_service.py


class Campaign(TypedDict):
    """An OTA campaign as stored (``hub/campaigns.py`` drives it; ``ota/rollout.py`` plans and judges)."""

    id: str
    target: str
    version: str
    devices: list[str]
    waves: list[list[str]]
    fractions: list[float]
    policy: dict[str, Any]
    state: CampaignState
    wave: int
    wave_started: float | None
    commanded: list[str]
    outcomes: dict[str, dict[str, Any]]
    log: list[CampaignLogEntry]
    created_at: float
    # Written by the campaign service (hub/campaign_service.py); absent on older campaigns.
    lease: NotRequired[dict[str, Any] | None]
    promote: NotRequired[bool]


class User(TypedDict):
    """A user as stored: the argon2id hash of the password, never the password."""

    username: str
    password_hash: str
    role: str
    created_at: float
    disabled_at: float | None


class UserSummary(TypedDict):
    """A user as listed (no password hash)."""

    username: str
    role: str
    created_at: float
    disabled_at: float | None


class ApiTokenGrant(TypedDict):
    """What an API token grants, joined with its user's role and state."""

    username: str
    role: str
    label: str
    expires_at: float
    revoked_at: float | None
    disabled_at: float | None


class EventStore(Protocol):
    """What devices send (``hub/ingest.py`` writes, the API reads): events, roll-ups, devices, quarantine."""

    def add_events(self, events: Sequence[wire.Event], received_at: float) -> int:
        """Insert events and their roll-ups, ignoring ids already stored; returns how many were new."""
        ...

    def record_heartbeat(self, beat: wire.Heartbeat, received_at: float) -> None: ...
    def record_status(self, status: wire.Status, received_at: float) -> None: ...
    def quarantine(self, records: Sequence[QuarantineRecord]) -> None: ...
    def list_events(self, query: EventQuery) -> tuple[list[dict[str, Any]], tuple[int, str] | None]:
        """Newest first by (window start, id), and the cursor of the next page (None: the last page)."""
        ...

    def event_ids(self, site: str | None = None, device: str | None = None) -> list[str]:
        """Every stored event id, once per stored copy (a duplicate would show twice)."""
        ...

    def compact(self, now: float, grace_s: float = 3600) -> int:
        """Pack the hours that ended ``grace_s`` before ``now`` into one segment per stream and hour."""
        ...

    def compact_recent(self, now: float, grace_s: float = 120) -> int:
        """Pack every hot event whose window started ``grace_s`` before ``now``: closed hours into one
        segment per stream and hour, the hour in progress into one more segment per stream."""
        ...

    def list_rollups(self, query: RollupQuery) -> Page[RollupKey]:
        """Roll-ups in (hour, site, device, place, metric) order, ``query.limit`` at most per page."""
        ...

    def list_devices(self) -> list[dict[str, Any]]: ...
    def list_quarantine(self, limit: int = 100) -> list[dict[str, Any]]: ...
    def quarantine_count(self) -> int: ...
    def count_events(self) -> int: ...
    def record_ingest_status(
        self, worker: str, connected: bool, stats: dict[str, Any], now: float
    ) -> None: ...
    def list_ingest_status(self) -> list[dict[str, Any]]: ...


class RetentionStore(Protocol):
    """Purges by the retention policy (``hub/retention.py``)."""

    def purge(self, retention: Retention, now: float) -> dict[str, int]:
        """Delete what the retention policy says is too old; returns rows removed per data class."""
        ...

    def list_purges(self, limit: int = 100) -> list[dict[str, Any]]: ...
    def maintain_rollups(self) -> None:
        """Vacuum and analyse the roll-ups (after purges, from the hub's periodic job)."""
        ...


class RegistryStore(Protocol):
    """The enrolment registry (``hub/enrolment.py``)."""

    def add_enrol_token(
        self, token_hash: str, site: str, profile: str, device: str | None, now: float, expires_at: float
    ) -> None: ...
    def enrol_device(
        self, token_hash: str, device: str, now: float, issue: Callable[[str, str], tuple[str, str, float]]
    ) -> dict[str, Any]:
        """Spend a one-time token and record the device, in one transaction; ``issue(site, device)``
        returns (serial hex, fingerprint, not_after) and runs inside it. Raises EnrolmentError."""
        ...

    def list_enrolments(self) -> list[dict[str, Any]]: ...
    def revoke_device(self, site: str, device: str, now: float) -> str | None:
        """Mark a device revoked; returns the revoked serial, or None when it was not enrolled."""
        ...

    def list_revoked(self) -> list[tuple[str, float]]: ...


class FusionStore(Protocol):
    """City data fusion (``hub/fusion``): the cube, imports, model state, anomalies."""

    def record_import(
        self, source: str, sha256: str, file: str, report: dict[str, Any], cube: Sequence[CubeRow], now: float
    ) -> bool:
        """Add an imported file's cube rows in one transaction; False (and nothing added) if seen before."""
        ...

    def replace_cube(self, rows: Sequence[CubeRow]) -> None:
        """Upsert rows, replacing the count (sources recomputed from roll-ups, such as cameras)."""
        ...

    def list_zones(self, prefix: str) -> list[str]: ...
    def list_imports(self, limit: int = 100) -> list[dict[str, Any]]: ...
    def query_cube(self, query: CubeQuery) -> Page[CubeKey]:
        """Cube rows in (hour, zone, source, category) order, ``query.limit`` at most per page."""
        ...

    def save_state(self, name: str, body: str, now: float) -> None: ...
    def load_state(self, name: str) -> str | None: ...
    def add_anomalies(self, rows: Sequence[dict[str, Any]], now: float) -> int: ...
    def list_anomalies(
        self,
        start: int | None = None,
        end: int | None = None,
        limit: int = 1000,
        after: AnomalyKey | None = None,
    ) -> Page[AnomalyKey]:
        """Anomalies newest hour first, then by p (most improbable first), then zone, source, category."""
        ...


class AccessStore(Protocol):
    """Users and API tokens (``hub/auth.py``)."""

    def add_user(self, username: str, password_hash: str, role: str, now: float) -> bool:
        """False when the user exists already."""
        ...

    def get_user(self, username: str) -> User | None: ...
    def list_users(self) -> list[UserSummary]: ...
    def update_user(self, username: str, *, password_hash: str | None = None, role: str | None = None,
                    disabled_at: float | bool | None = False) -> bool: ...  # fmt: skip
    def add_api_token(
        self, token_hash: str, username: str, label: str, now: float, expires_at: float
    ) -> None: ...
    def get_api_token(self, token_hash: str) -> ApiTokenGrant | None: ...
    def revoke_api_tokens(
        self, *, token_hash: str | None = None, username: str | None = None, now: float
    ) -> int: ...


class AuditStore(Protocol):
    """The hash-chained, append-only audit log (``hub/audit.py``)."""

    def append_audit(
        self, entry: dict[str, Any], chain: Callable[[str, dict[str, Any]], str]
    ) -> tuple[int, str]:
        """Append one entry; ``chain(prev_hash, entry)`` gives its hash, under a lock on the log's head."""
        ...

    def list_audit(self, *, after: int = 0, limit: int = 1000, username: str | None = None,
                   path: str | None = None, since: float | None = None, until: float | None = None
                   ) -> list[dict[str, Any]]: ...  # fmt: skip


class CampaignStateStore(Protocol):
    """OTA campaigns, shared by every hub host on one database (``hub/campaigns.py``)."""

    def add_campaign(self, campaign: Campaign, now: float) -> bool:
        """False (and nothing written) when a campaign has this id already."""
        ...

    def get_campaign(self, campaign_id: str) -> Campaign | None: ...
    def list_campaigns(self) -> list[Campaign]: ...
    def modify_campaign(
        self, campaign_id: str, change: Callable[[Campaign], Mapping[str, Any] | None], now: float
    ) -> Campaign | None:
        """Read the campaign, write the fields ``change`` returns, in one transaction that holds the
        campaign's row from the read to the write (no other process writes in between). Returns the
        campaign as written, or None when there is none with this id."""
        ...


class ThrottleStore(Protocol):
    """Throttling state shared by every hub process (login attempts; ``hub/login_guard.py``)."""

    def update_throttle(
        self,
        key: str,
        change: Callable[[dict[str, Any] | None], tuple[dict[str, Any], float]],
        now: float,
    ) -> dict[str, Any]:
        """Read ``key``'s state (None when absent or expired), write what ``change`` returns (the
        new state, the epoch after which it may be forgotten), holding the row from the read to the
        write. Returns the state written."""
        ...

    def get_throttle(self, key: str, now: float) -> dict[str, Any] | None:
        """``key``'s state, None when absent or expired."""
        ...

    def count_throttle(self) -> int: ...


class BucketStore(Protocol):
    """Token buckets shared by every hub process (rate limits; ``hub/ratelimit.py``)."""

    def take_tokens(self, wanted: Mapping[str, int], rate: float, burst: int, now: float) -> dict[str, int]:
        """Take up to ``wanted[key]`` tokens from each key's bucket (``rate`` a second, at most ``burst``;
        a new key's bucket is full), in one atomic decision; returns how many each key got."""
        ...

    def count_buckets(self) -> int: ...


@dataclass(frozen=True, slots=True)
class JobClaim:
    """A periodic job's lease as its holder sees it after a claim."""

    due: bool  # the claim marked the job started: the caller runs it now
    ran_at: float  # when the job last started (the claim's ``now`` when due)
    expires_at: float  # the lease lapses then unless renewed
    runs: int  # how many times the job has started, all processes together


class JobLeaseStore(Protocol):
    """Leases on periodic jobs, so one hub process runs each (``hub/jobs.py``)."""

    def claim_job(
        self, name: str, holder: str, now: float, lease_s: float, every_s: float
    ) -> JobClaim | None:
        """Take or renew ``name``'s lease for ``lease_s`` and, when ``every_s`` has passed since the
        job last started, mark it started at ``now`` (one atomic statement); None when another holder's
        lease has not expired."""
        ...

    def release_job(self, name: str, holder: str) -> None:
        """Give the lease up (when ``holder`` holds it): another process may take it at once."""
        ...

    def list_jobs(self) -> list[dict[str, Any]]:
        """Every job's lease: name, holder, expires_at, ran_at, runs."""
        ...


class RenewalStore(Protocol):
    """Device certificates renewed before they expire (``hub/cert_renewal.py``)."""

    def renew_enrolment(
        self, site: str, device: str, presented: str, issue: Callable[[], tuple[str, str, float]]
    ) -> str | None:
        """A new certificate for the device of ``presented`` (one of its serials); None, or why not."""
        ...


class TagStore(Protocol):
    """Operators' tags on devices (``hub/storage/tags.py``)."""

    def set_device_tags(self, site: str, device: str, tags: Sequence[str]) -> None: ...
    def list_device_tags(self) -> dict[str, list[str]]: ...


class StoreAdmin(Protocol):
    """The backend itself."""

    backend: str

    def schema_version(self) -> int: ...
    def ping(self) -> bool: ...
    def close(self) -> None: ...


class Store(
    EventStore,
    RetentionStore,
    RegistryStore,
    FusionStore,
    AccessStore,
    AuditStore,
    CampaignStateStore,
    ThrottleStore,
    BucketStore,
    JobLeaseStore,
    TagStore,
    RenewalStore,
    StoreAdmin,
    Protocol,
):
    """A storage backend: SQLite (embedded) or PostgreSQL (production); every domain."""


def walk_pages(first: Page[K], more: Callable[[K], Page[K]]) -> Iterator[dict[str, Any]]:
    """Every row of ``first`` and of the pages after it, asked for with ``more(next)``."""
    page = first
    while True:
        yield from page.rows
        if page.next is None:
            return
        page = more(page.next)


def walk_rollups(store: EventStore, query: RollupQuery) -> Iterator[dict[str, Any]]:
    """Every roll-up ``query`` matches, page after page of ``query.limit`` rows."""
    # A generator: nothing is read until the first row is asked for, as callers expect.
    yield from walk_pages(
        store.list_rollups(query), lambda key: store.list_rollups(replace(query, after=key))
    )


def walk_cube(store: FusionStore, query: CubeQuery) -> Iterator[dict[str, Any]]:
    """Every cube row ``query`` matches, page after page of ``query.limit`` rows."""
    yield from walk_pages(store.query_cube(query), lambda key: store.query_cube(replace(query, after=key)))


def walk_anomalies(
    store: FusionStore, start: int | None, end: int | None, page: int = 10_000
) -> Iterator[dict[str, Any]]:
    """Every anomaly in [start, end), newest hour first, ``page`` rows per query."""
    yield from walk_pages(
        store.list_anomalies(start, end, page), lambda key: store.list_anomalies(start, end, page, key)
    )
