"""OTA campaigns in the shared store: every hub host on one database sees and steers one rollout.

One row per campaign, the campaign as a JSON document beside its state: the runner's decisions
read and change the whole campaign at once (wave, log, outcomes), and one row lock covers that.
A read-modify-write (:meth:`CampaignSql.modify_campaign`) holds the row from the read to the
write — ``SELECT … FOR UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` (the database's write lock)
on SQLite — so a runner's step and an operator's pause, in any two processes, never undo each other.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from hub.storage.base import Campaign
from hub.storage.sqlbase import SqlBase

__all__ = ["CampaignSql"]


def _load(text: str) -> Campaign:
    campaign: Campaign = json.loads(text)
    return campaign


class CampaignSql(SqlBase):
    """The ``campaigns`` table."""

    def add_campaign(self, campaign: Campaign, now: float) -> bool:
        with self._tx() as cur:
            cur.execute(
                self._sql(
                    "INSERT INTO campaigns (id, state, created_at, updated_at, doc) VALUES (?,?,?,?,?)"
                    " ON CONFLICT (id) DO NOTHING RETURNING id"
                ),
                (campaign["id"], campaign["state"], campaign["created_at"], now, json.dumps(campaign)),
            )
            return cur.fetchone() is not None

    def get_campaign(self, campaign_id: str) -> Campaign | None:
        rows = self._query("SELECT doc FROM campaigns WHERE id = ?", (campaign_id,))
        return _load(rows[0][0]) if rows else None

    def list_campaigns(self) -> list[Campaign]:
        return [_load(r[0]) for r in self._query("SELECT doc FROM campaigns ORDER BY created_at, id")]

    def modify_campaign(
        self, campaign_id: str, change: Callable[[Campaign], Mapping[str, Any] | None], now: float
    ) -> Campaign | None:
        with self._tx() as cur:
            select = "SELECT doc FROM campaigns WHERE id = ?" + self._for_update
            cur.execute(self._sql(select), (campaign_id,))
            row = cur.fetchone()
            if row is None:
                return None
            campaign = _load(row[0])
            fields = change(campaign)
            if not fields:
                return campaign
            written = _load(json.dumps({**campaign, **fields}))
            cur.execute(
                self._sql("UPDATE campaigns SET state = ?, updated_at = ?, doc = ? WHERE id = ?"),
                (written["state"], now, json.dumps(written), campaign_id),
            )
            return written
