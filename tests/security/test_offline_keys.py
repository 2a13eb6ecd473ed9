"""Issue 17, finding 5: `vigie hub init --offline-keys DIR` keeps only snapshot and timestamp keys online."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from ota.repository import list_targets, publish, refresh_timestamp
from tests.conftest import cli
from vigie.exceptions import VigieError


def test_hub_init_can_keep_root_and_targets_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    medium = tmp_path / "usb"
    env = {
        **os.environ,
        "VIGIE_HUB_STATE_DIR": str(tmp_path / "state"),
        "VIGIE_HUB_DB": str(tmp_path / "h.sqlite"),
    }
    env.pop("VIGIE_HUB_BROKER_USER", None)
    done = subprocess.run(
        cli("hub", "init", "--offline-keys", str(medium)),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"offline keys  {medium}" in done.stdout
    repo = tmp_path / "state/ota"
    assert sorted(p.name for p in (repo / "keys").iterdir()) == ["snapshot.pem", "timestamp.pem"]
    assert sorted(p.name for p in medium.iterdir()) == ["root.pem", "targets.pem"]
    assert stat.S_IMODE(medium.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in medium.iterdir())
    # The daily re-signing needs only the online keys.
    assert refresh_timestamp(repo) == 2
    # Publishing needs the targets key: refused with the way out, then done with the medium mounted.
    bundle = tmp_path / "m.tar.gz"
    bundle.write_bytes(b"model bundle")
    monkeypatch.delenv("VIGIE_OTA_OFFLINE_KEYS", raising=False)
    with pytest.raises(VigieError, match=r"TUF targets key is not in .*VIGIE_OTA_OFFLINE_KEYS"):
        publish(repo, bundle, "m.tar.gz")
    monkeypatch.setenv("VIGIE_OTA_OFFLINE_KEYS", str(medium))
    publish(repo, bundle, "m.tar.gz")
    assert "m.tar.gz" in list_targets(repo)
