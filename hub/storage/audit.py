"""The audit log (``hub/audit.py``): every request, hash-chained, append-only (triggers refuse the rest)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from hub.storage.sqlbase import SqlBase

__all__ = ["AuditSql"]


class AuditSql(SqlBase):
    """Appends under a lock on the chain's head; reads by sequence number."""

    _AUDIT_COLUMNS = ("seq", "ts", "username", "role", "method", "path", "params", "purpose", "status",
                      "prev_hash", "hash")  # fmt: skip

    def append_audit(
        self, entry: dict[str, Any], chain: Callable[[str, dict[str, Any]], str]
    ) -> tuple[int, str]:
        with self._tx() as cur:
            if self._placeholder != "?":
                # One writer at a time on the chain's head, across every hub process.
                cur.execute("LOCK TABLE audit IN SHARE ROW EXCLUSIVE MODE")
            cur.execute("SELECT hash FROM audit ORDER BY seq DESC LIMIT 1")
            row = cur.fetchone()
            prev = str(row[0]) if row else "0" * 64
            digest = chain(prev, entry)
            cur.execute(
                self._sql(
                    "INSERT INTO audit"
                    " (ts, username, role, method, path, params, purpose, status, prev_hash, hash)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?) RETURNING seq"
                ),
                (entry["ts"], entry["username"], entry["role"], entry["method"], entry["path"],
                 json.dumps(entry["params"], sort_keys=True), entry["purpose"], entry["status"],
                 prev, digest),
            )  # fmt: skip
            return int(cur.fetchone()[0]), digest

    def list_audit(
        self, *, after: int = 0, limit: int = 1000, username: str | None = None, path: str | None = None,
        since: float | None = None, until: float | None = None,
    ) -> list[dict[str, Any]]:  # fmt: skip
        where: list[str] = ["seq > ?"]
        args: list[Any] = [after]
        for clause, value in (("username = ?", username), ("path LIKE ?", f"{path}%" if path else None),
                              ("ts >= ?", since), ("ts < ?", until)):  # fmt: skip
            if value is not None:
                where.append(clause)
                args.append(value)
        rows = self._query(
            f"SELECT {', '.join(self._AUDIT_COLUMNS)} FROM audit WHERE {' AND '.join(where)}"
            " ORDER BY seq LIMIT ?",
            (*args, limit),
        )
        out = []
        for r in rows:
            item = dict(zip(self._AUDIT_COLUMNS, r, strict=True))
            item["params"] = json.loads(item["params"])
            out.append(item)
        return out
