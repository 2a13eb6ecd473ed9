"""Leases on periodic jobs, shared by every hub process (issue 22): one process runs each job.

One row per job: who holds its lease (``holder``, until ``expires_at``), when the job last started
(``ran_at``) and how many times it has (``runs``). A claim is one statement, an upsert that takes
the lease when it is free or expired, renews it when the caller holds it, and in the same write
marks the job started when its period has passed since ``ran_at``. PostgreSQL locks the row for the
statement (a second claimant waits, then sees the first one's row); SQLite has one writer. So
whatever the number of uvicorn workers, ingest processes or hosts on one database, one holds each
lease at a time and the job starts once a period, even across a hand-over: a new holder runs the
job when it is due, not when it takes the lease.
"""

from __future__ import annotations

from typing import Any

from hub.storage.base import JobClaim
from hub.storage.sqlbase import SqlBase

__all__ = ["LeaseSql"]

# SET's right-hand sides read the row as it was (both dialects), so the CASEs see the old ran_at.
_CLAIM = (
    "INSERT INTO job_leases (name, holder, expires_at, ran_at, runs) VALUES (?, ?, ?, ?, 1)"
    " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at,"
    " ran_at = CASE WHEN job_leases.ran_at <= ? THEN excluded.ran_at ELSE job_leases.ran_at END,"
    " runs = job_leases.runs + CASE WHEN job_leases.ran_at <= ? THEN 1 ELSE 0 END"
    " WHERE job_leases.holder = excluded.holder OR job_leases.expires_at <= excluded.ran_at"
    " RETURNING ran_at, expires_at, runs"
)


class LeaseSql(SqlBase):
    """The ``job_leases`` table."""

    def claim_job(
        self, name: str, holder: str, now: float, lease_s: float, every_s: float
    ) -> JobClaim | None:
        if lease_s <= 0 or every_s <= 0:
            raise ValueError(f"a job lease needs lease_s > 0 and every_s > 0 (got {lease_s}, {every_s})")
        due_before = now - every_s
        with self._statements() as cur:
            cur.execute(self._sql(_CLAIM), (name, holder, now + lease_s, now, due_before, due_before))
            rows = cur.fetchall()  # all of them: SQLite ends the statement, and its write lock, here
        if not rows:
            return None  # another process holds an unexpired lease
        ran_at, expires_at, runs = rows[0]
        # ran_at is ``now`` exactly when this statement marked the job started (floats round-trip).
        return JobClaim(due=float(ran_at) == now, ran_at=float(ran_at), expires_at=float(expires_at),
                        runs=int(runs))  # fmt: skip

    def release_job(self, name: str, holder: str) -> None:
        with self._statements() as cur:
            cur.execute(
                self._sql("UPDATE job_leases SET expires_at = 0 WHERE name = ? AND holder = ?"),
                (name, holder),
            )

    def list_jobs(self) -> list[dict[str, Any]]:
        rows = self._query("SELECT name, holder, expires_at, ran_at, runs FROM job_leases ORDER BY name")
        keys = ("name", "holder", "expires_at", "ran_at", "runs")
        return [dict(zip(keys, r, strict=True)) for r in rows]
