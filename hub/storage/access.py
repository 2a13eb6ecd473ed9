"""Access control (``hub/auth.py``): users (argon2id password hashes) and API tokens (SHA-256 hashes)."""

from __future__ import annotations

from typing import Any

from hub.storage.base import ApiTokenGrant, User, UserSummary
from hub.storage.sqlbase import SqlBase

__all__ = ["AccessSql"]


class AccessSql(SqlBase):
    """Users and their API tokens."""

    def add_user(self, username: str, password_hash: str, role: str, now: float) -> bool:
        with self._tx() as cur:
            cur.execute(
                self._sql(
                    "INSERT INTO users (username, password_hash, role, created_at) VALUES (?,?,?,?)"
                    " ON CONFLICT (username) DO NOTHING RETURNING username"
                ),
                (username, password_hash, role, now),
            )
            return cur.fetchone() is not None

    def get_user(self, username: str) -> User | None:
        rows = self._query(
            "SELECT username, password_hash, role, created_at, disabled_at FROM users WHERE username = ?",
            (username,),
        )
        if not rows:
            return None
        name, password_hash, role, created_at, disabled_at = rows[0]
        return User(username=name, password_hash=password_hash, role=role, created_at=created_at,
                    disabled_at=disabled_at)  # fmt: skip

    def list_users(self) -> list[UserSummary]:
        rows = self._query("SELECT username, role, created_at, disabled_at FROM users ORDER BY username")
        return [UserSummary(username=r[0], role=r[1], created_at=r[2], disabled_at=r[3]) for r in rows]

    def update_user(
        self, username: str, *, password_hash: str | None = None, role: str | None = None,
        disabled_at: float | bool | None = False,
    ) -> bool:  # fmt: skip
        sets: list[str] = []
        args: list[Any] = []
        for column, value in (("password_hash", password_hash), ("role", role)):
            if value is not None:
                sets.append(f"{column} = ?")
                args.append(value)
        if disabled_at is not False:
            sets.append("disabled_at = ?")
            args.append(disabled_at)
        if not sets:
            return self.get_user(username) is not None
        with self._tx() as cur:
            cur.execute(
                self._sql(f"UPDATE users SET {', '.join(sets)} WHERE username = ?"), (*args, username)
            )
            return bool(cur.rowcount)

    def add_api_token(
        self, token_hash: str, username: str, label: str, now: float, expires_at: float
    ) -> None:
        with self._tx() as cur:
            cur.execute(
                self._sql(
                    "INSERT INTO api_tokens (token_hash, username, label, created_at, expires_at)"
                    " VALUES (?,?,?,?,?)"
                ),
                (token_hash, username, label, now, expires_at),
            )

    def get_api_token(self, token_hash: str) -> ApiTokenGrant | None:
        rows = self._query(
            "SELECT t.username, u.role, t.label, t.expires_at, t.revoked_at, u.disabled_at FROM api_tokens t"
            " JOIN users u ON u.username = t.username WHERE t.token_hash = ?",
            (token_hash,),
        )
        if not rows:
            return None
        username, role, label, expires_at, revoked_at, disabled_at = rows[0]
        return ApiTokenGrant(username=username, role=role, label=label, expires_at=expires_at,
                             revoked_at=revoked_at, disabled_at=disabled_at)  # fmt: skip

    def revoke_api_tokens(
        self, *, token_hash: str | None = None, username: str | None = None, now: float
    ) -> int:
        column, value = ("token_hash", token_hash) if token_hash else ("username", username)
        with self._tx() as cur:
            cur.execute(
                self._sql(f"UPDATE api_tokens SET revoked_at = ? WHERE {column} = ? AND revoked_at IS NULL"),
                (now, value),
            )
            return int(cur.rowcount)
