"""Operators' tags on devices (``pilot``, ``north-district``): a campaign can select by tag."""

from __future__ import annotations

from collections.abc import Sequence

from hub.storage.sqlbase import SqlBase

__all__ = ["TagSql"]


class TagSql(SqlBase):
    """The ``device_tags`` table: one row per device and tag."""

    def set_device_tags(self, site: str, device: str, tags: Sequence[str]) -> None:
        """Replace the device's tags (an empty list removes them all)."""
        with self._tx() as cur:
            cur.execute(self._sql("DELETE FROM device_tags WHERE site = ? AND device = ?"), (site, device))
            for tag in sorted(set(tags)):
                cur.execute(
                    self._sql("INSERT INTO device_tags (site, device, tag) VALUES (?,?,?)"),
                    (site, device, tag),
                )

    def list_device_tags(self) -> dict[str, list[str]]:
        """``site/device`` → its tags, sorted."""
        tags: dict[str, list[str]] = {}
        for site, device, tag in self._query(
            "SELECT site, device, tag FROM device_tags ORDER BY site, device, tag"
        ):
            tags.setdefault(f"{site}/{device}", []).append(tag)
        return tags
