"""The enrolment registry: one-time tokens, enrolled devices and the revoked certificates (the CRL)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from hub.storage.sqlbase import SqlBase, iso
from vigie.exceptions import EnrolmentError

__all__ = ["RegistrySql"]


class RegistrySql(SqlBase):
    """What ``hub/enrolment.py`` stores."""

    def add_enrol_token(
        self, token_hash: str, site: str, profile: str, device: str | None, now: float, expires_at: float
    ) -> None:
        with self._tx() as cur:
            cur.execute(
                self._sql(
                    "INSERT INTO enrol_tokens (token_hash, site, profile, device, created_at, expires_at)"
                    " VALUES (?,?,?,?,?,?)"
                ),
                (token_hash, site, profile, device, now, expires_at),
            )

    def enrol_device(
        self, token_hash: str, device: str, now: float, issue: Callable[[str, str], tuple[str, str, float]]
    ) -> dict[str, Any]:
        with self._tx() as cur:
            # FOR UPDATE-like: SQLite's BEGIN IMMEDIATE and PostgreSQL's row lock below both make
            # two devices racing for one token see it one after the other.
            cur.execute(
                self._sql(
                    "SELECT site, profile, device, expires_at, used_at, used_by FROM enrol_tokens"
                    " WHERE token_hash = ?" + self._for_update
                ),
                (token_hash,),
            )
            row = cur.fetchone()
            if row is None:
                raise EnrolmentError(
                    "token: unknown enrolment token; create one with `vigie hub enrol-token create`"
                )
            site, profile, bound, expires_at, used_at, used_by = row
            if used_at is not None:
                raise EnrolmentError(
                    f"token: already used by {site}/{used_by} at {iso(used_at)}; tokens are single-use, "
                    "create a new one"
                )
            if expires_at <= now:
                raise EnrolmentError(f"token: expired at {iso(expires_at)}; create a new one")
            if bound is not None and bound != device:
                raise EnrolmentError(f"device: this token is for device {bound!r}, not {device!r}")
            cur.execute(
                self._sql("SELECT revoked_at FROM enrolments WHERE site = ? AND device = ?"), (site, device)
            )
            existing = cur.fetchone()
            if existing is not None and existing[0] is None:
                raise EnrolmentError(
                    f"device: {site}/{device} is already enrolled; to replace its hardware, "
                    f"revoke it first (`vigie hub revoke {site}/{device}`)"
                )
            serial, fp, not_after = issue(site, device)
            cur.execute(
                self._sql("UPDATE enrol_tokens SET used_at = ?, used_by = ? WHERE token_hash = ?"),
                (now, device, token_hash),
            )
            cur.execute(
                self._sql(
                    "INSERT INTO enrolments"
                    " (site, device, profile, serial, fingerprint, not_after, enrolled_at)"
                    " VALUES (?,?,?,?,?,?,?)"
                    " ON CONFLICT (site, device) DO UPDATE SET profile = excluded.profile,"
                    " serial = excluded.serial, fingerprint = excluded.fingerprint,"
                    " not_after = excluded.not_after, enrolled_at = excluded.enrolled_at, revoked_at = NULL"
                ),
                (site, device, profile, serial, fp, not_after, now),
            )
        return {"site": site, "device": device, "profile": profile, "serial": serial, "fingerprint": fp}

    def list_enrolments(self) -> list[dict[str, Any]]:
        rows = self._query(
            "SELECT site, device, profile, serial, fingerprint, not_after, enrolled_at, revoked_at"
            " FROM enrolments ORDER BY site, device"
        )
        keys = (
            "site",
            "device",
            "profile",
            "serial",
            "fingerprint",
            "not_after",
            "enrolled_at",
            "revoked_at",
        )
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def revoke_device(self, site: str, device: str, now: float) -> str | None:
        with self._tx() as cur:
            cur.execute(
                self._sql("SELECT serial, revoked_at FROM enrolments WHERE site = ? AND device = ?"),
                (site, device),
            )
            row = cur.fetchone()
            if row is None:
                return None
            serial = str(row[0])
            if row[1] is None:
                cur.execute(
                    self._sql("UPDATE enrolments SET revoked_at = ? WHERE site = ? AND device = ?"),
                    (now, site, device),
                )
            # Certificates a renewal replaced are valid until they expire: they go too.
            cur.execute(
                self._sql("SELECT serial FROM device_certs WHERE site = ? AND device = ?"), (site, device)
            )
            for revoked in {serial, *(str(r[0]) for r in cur.fetchall())}:
                cur.execute(
                    self._sql(
                        "INSERT INTO revoked_certs (serial, site, device, revoked_at) VALUES (?,?,?,?)"
                        " ON CONFLICT (serial) DO NOTHING"
                    ),
                    (revoked, site, device, now),
                )
        return serial

    def renew_enrolment(
        self, site: str, device: str, presented: str, issue: Callable[[], tuple[str, str, float]]
    ) -> str | None:
        """Give the device a new certificate, if ``presented`` (a serial) is one of its unrevoked ones.

        Returns None when it renewed, else why not. ``issue`` signs the new certificate inside the
        transaction. Any of the device's certificates may renew (the answer to a renewal can be lost:
        the device then tries again with the one it has); every one is recorded, and revoked with
        the device.
        """
        with self._tx() as cur:
            cur.execute(
                self._sql(
                    "SELECT serial, revoked_at FROM enrolments WHERE site = ? AND device = ?"
                    + self._for_update
                ),
                (site, device),
            )
            row = cur.fetchone()
            if row is None:
                return f"{site}/{device} is not enrolled"
            if row[1] is not None:
                return f"{site}/{device} is revoked"
            cur.execute(
                self._sql("SELECT 1 FROM device_certs WHERE serial = ? AND site = ? AND device = ?"),
                (presented, site, device),
            )
            if presented != str(row[0]) and cur.fetchone() is None:
                return f"certificate {presented} was not issued to {site}/{device} by this hub"
            cur.execute(self._sql("SELECT 1 FROM revoked_certs WHERE serial = ?"), (presented,))
            if cur.fetchone() is not None:
                return f"certificate {presented} is revoked"
            new_serial, fp, not_after = issue()
            cur.execute(
                self._sql(
                    "UPDATE enrolments SET serial = ?, fingerprint = ?, not_after = ?"
                    " WHERE site = ? AND device = ?"
                ),
                (new_serial, fp, not_after, site, device),
            )
            for serial in (presented, new_serial):
                cur.execute(
                    self._sql(
                        "INSERT INTO device_certs (serial, site, device, issued_at) VALUES (?,?,?,?)"
                        " ON CONFLICT (serial) DO NOTHING"
                    ),
                    (serial, site, device, time.time()),
                )
            return None

    def list_revoked(self) -> list[tuple[str, float]]:
        return [(str(r[0]), float(r[1])) for r in self._query("SELECT serial, revoked_at FROM revoked_certs")]
