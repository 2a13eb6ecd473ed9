"""Issue 17, finding 5: TUF root and targets keys offline by default; the hub keeps snapshot and timestamp.

A fresh ``vigie hub init`` puts root and targets in a folder of their own beside the state folder
(``--offline-keys DIR`` chooses it), and tells the operator to move it off the hub; ``vigie ota
publish --keys DIR`` signs with the targets key from where the operator keeps it. Only
``--dev-online-keys``, named for what it is, keeps all four on the hub.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from ota.repository import list_targets, publish, refresh_timestamp, rotate_key
from tests.conftest import cli
from vigie.exceptions import VigieError


def _init(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "VIGIE_HUB_STATE_DIR": str(tmp_path / "state"),
        "VIGIE_HUB_DB": str(tmp_path / "h.sqlite"),
    }
    env.pop("VIGIE_HUB_BROKER_USER", None)
    env.pop("VIGIE_OTA_OFFLINE_KEYS", None)
    return subprocess.run(cli("hub", "init", *extra), env=env, capture_output=True, text=True, timeout=120)


def _keys(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_plain_hub_init_keeps_root_and_targets_off_the_state_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    done = _init(tmp_path)
    assert done.returncode == 0, done.stderr
    medium = tmp_path / "state-offline-keys"
    assert f"offline keys  {medium}" in done.stdout
    assert f"NOW move {medium} to a removable medium" in done.stderr
    repo = tmp_path / "state/ota"
    assert _keys(repo / "keys") == ["snapshot.pem", "timestamp.pem"]
    assert _keys(medium) == ["root.pem", "targets.pem"]
    assert stat.S_IMODE(medium.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in medium.iterdir())
    # The daily re-signing needs only the online keys.
    assert refresh_timestamp(repo) == 2
    # Publishing needs the targets key: refused with the way out, then done with the medium named.
    bundle = tmp_path / "m.tar.gz"
    bundle.write_bytes(b"model bundle")
    monkeypatch.delenv("VIGIE_OTA_OFFLINE_KEYS", raising=False)
    with pytest.raises(VigieError, match=r"TUF targets key is not in .*--keys DIR"):
        publish(repo, bundle, "m.tar.gz")
    publish(repo, bundle, "m.tar.gz", keys=medium)
    assert "m.tar.gz" in list_targets(repo)
    # A rotation of an offline key writes its successor to the medium, never to the hub.
    before = (medium / "targets.pem").read_bytes()
    assert rotate_key(repo, "targets", keys=medium) == 2
    assert (medium / "targets.pem").read_bytes() != before
    assert (medium / "targets.pem.retired-1").read_bytes() == before
    assert _keys(repo / "keys") == ["snapshot.pem", "timestamp.pem"]


def test_the_signing_command_takes_the_key_from_the_medium(tmp_path: Path, model_dir: Path) -> None:
    """`vigie ota publish --keys DIR`, as in the ceremony (docs/security.md), with a real bundle."""
    from ota.bundle import pack
    from tests.ota.test_ota import LABELS, MODEL, _manifest

    medium = tmp_path / "usb"
    assert _init(tmp_path, "--offline-keys", str(medium)).returncode == 0
    bundle = tmp_path / "ssd-1.1.0.tar"
    manifest = pack(model_dir / MODEL, model_dir / LABELS, _manifest("1.1.0", 2000.0), bundle)
    env = {**os.environ, "VIGIE_HUB_STATE_DIR": str(tmp_path / "state")}
    env.pop("VIGIE_OTA_OFFLINE_KEYS", None)
    refused = subprocess.run(
        cli("ota", "publish", str(bundle)), env=env, capture_output=True, text=True, timeout=60
    )
    assert refused.returncode != 0
    assert "the TUF targets key is not in" in refused.stderr
    assert "Traceback" not in refused.stderr
    done = subprocess.run(
        cli("ota", "publish", str(bundle), "--keys", str(medium)),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert manifest.target_name in list_targets(tmp_path / "state/ota")


def test_development_mode_is_explicit(tmp_path: Path) -> None:
    done = _init(tmp_path, "--dev-online-keys")
    assert done.returncode == 0, done.stderr
    assert "--dev-online-keys: development only" in done.stdout
    assert _keys(tmp_path / "state/ota/keys") == ["root.pem", "snapshot.pem", "targets.pem", "timestamp.pem"]
    assert not (tmp_path / "state-offline-keys").exists()


def test_the_offline_folder_cannot_be_inside_the_state_folder(tmp_path: Path) -> None:
    done = _init(tmp_path, "--offline-keys", str(tmp_path / "state/keys"))
    assert done.returncode != 0
    assert "must be kept outside the hub's state folder" in done.stderr
    assert not (tmp_path / "state").exists()  # refused before anything was made


def test_keys_already_on_the_medium_are_never_overwritten(tmp_path: Path) -> None:
    medium = tmp_path / "usb"
    medium.mkdir()
    (medium / "root.pem").write_text("another hub's root key")
    done = _init(tmp_path, "--offline-keys", str(medium))
    assert done.returncode != 0
    assert f"{medium / 'root.pem'} exists" in done.stderr
    assert (medium / "root.pem").read_text() == "another hub's root key"
    assert not (tmp_path / "state").exists()


def test_the_state_dir_flag_is_where_the_hub_and_its_offline_keys_go(tmp_path: Path) -> None:
    """`vigie hub init --state-dir DIR` (docs/enrolment.md): the flag was ignored for ./vigie-hub-state."""
    env = {**os.environ, "VIGIE_HUB_DB": str(tmp_path / "h.sqlite")}
    env.pop("VIGIE_HUB_STATE_DIR", None)
    done = subprocess.run(
        cli("hub", "init", "--state-dir", str(tmp_path / "hub")),
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert _keys(tmp_path / "hub/ota/keys") == ["snapshot.pem", "timestamp.pem"]
    assert _keys(tmp_path / "hub-offline-keys") == ["root.pem", "targets.pem"]
    assert not (tmp_path / "vigie-hub-state").exists()
