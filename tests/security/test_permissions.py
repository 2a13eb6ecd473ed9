"""Issue 17, finding 5: on a fresh hub, secrets and personal data are readable by the hub's user only.

`vigie hub init` and `vigie hub serve` run as they do in production (a real uvicorn, a normal umask
of 022); the test then reads the modes the files were created with.
"""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.pki import DeviceCA
from tests.browser import serve_hub
from tests.conftest import cli


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A hub initialised and started once, then stopped: its folder."""
    folder = tmp_path_factory.mktemp("fresh")
    env = {
        **os.environ,
        "VIGIE_HUB_STATE_DIR": str(folder / "state"),
        "VIGIE_HUB_DB": str(folder / "data/hub.sqlite"),
    }
    old = os.umask(0o022)  # what a service manager or a login shell gives the hub
    try:
        subprocess.run(cli("hub", "init"), env=env, check=True, capture_output=True, timeout=120)
        with serve_hub(folder / "data/hub.sqlite", env, folder / "hub.log"):
            assert (folder / "data/hub.sqlite-wal").exists()
            assert (folder / "data/hub.sqlite-shm").exists()
            yield folder
    finally:
        os.umask(old)


@pytest.mark.parametrize("name", ["hub.sqlite", "hub.sqlite-wal", "hub.sqlite-shm"])
def test_the_database_and_its_journal_are_private(fresh: Path, name: str) -> None:
    """Password hashes, the audit log and the unsuppressed cube: 0600, in a folder the hub made 0700."""
    assert mode(fresh / "data" / name) == 0o600
    assert mode(fresh / "data") == 0o700


def test_the_state_folder_is_private(fresh: Path) -> None:
    assert mode(fresh / "state") == 0o700


def test_the_ca_key_is_alone_in_a_folder_only_the_hub_reads(fresh: Path) -> None:
    private = fresh / "state/pki/private"
    assert sorted(p.name for p in private.iterdir()) == ["ca.key"]
    assert mode(private) == 0o700
    assert mode(private / "ca.key") == 0o600
    assert not (fresh / "state/pki/ca.key").exists()
    # The broker's own key and what it must read stay outside that folder, readable by its group.
    assert mode(fresh / "state/pki") == 0o750
    assert mode(fresh / "state/pki/broker.key") == 0o640
    for public in ("ca.crt", "broker.crt", "crl.pem"):
        assert mode(fresh / "state/pki" / public) & 0o040, public


def test_a_ca_made_before_the_private_folder_moves_its_key_there(tmp_path: Path) -> None:
    """Hubs initialised before this change had pki/ca.key: loading the CA moves it into private/."""
    DeviceCA.init(tmp_path / "pki")
    (tmp_path / "pki/private/ca.key").rename(tmp_path / "pki/ca.key")
    (tmp_path / "pki/private").rmdir()
    ca = DeviceCA.load(tmp_path / "pki")
    assert ca.cert is not None
    assert not (tmp_path / "pki/ca.key").exists()
    assert mode(tmp_path / "pki/private/ca.key") == 0o600
    assert mode(tmp_path / "pki/private") == 0o700


def test_the_tuf_keys_are_private(fresh: Path) -> None:
    keys = fresh / "state/ota/keys"
    assert mode(keys) == 0o700
    for key in keys.iterdir():
        assert mode(key) == 0o600, key.name


def test_no_root_or_targets_key_is_left_in_the_hub_folders(fresh: Path) -> None:
    """A plain `vigie hub init`: the keys that decide what cameras run are not where the hub runs."""
    for folder in ("state", "data"):
        found = [p for p in (fresh / folder).rglob("*") if p.name.startswith(("root.pem", "targets.pem"))]
        assert found == [], found
    assert sorted(p.name for p in (fresh / "state/ota/keys").iterdir()) == ["snapshot.pem", "timestamp.pem"]
    medium = fresh / "state-offline-keys"  # beside the state folder, for the operator to take away
    assert sorted(p.name for p in medium.iterdir()) == ["root.pem", "targets.pem"]
    assert mode(medium) == 0o700
    assert all(mode(p) == 0o600 for p in medium.iterdir())


def test_a_broker_under_its_own_account_gets_group_access_only(tmp_path: Path) -> None:
    """With VIGIE_HUB_BROKER_USER, Mosquitto must reach broker/ and pki/: the group, never others."""
    from hub.enrolment import HubState

    HubState(tmp_path / "state", broker_user="mosquitto").init(["localhost"])
    assert mode(tmp_path / "state") == 0o750
    assert mode(tmp_path / "state/pki/private") == 0o700
    assert mode(tmp_path / "state/ota/keys") == 0o700
