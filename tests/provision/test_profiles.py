"""Each hardware profile's Python for the agent, as the role picks it, and the check that refuses an old one.

Runs the agent role's ``python.yml`` against this machine (``connection: local``) for one host per
profile group, with the repository's ``group_vars``: no box, no root. What cannot be run here is said
in docs/day-0.md: these machines have no Python 3.10 and no Ubuntu 22.04, so Jetson's old
``/usr/bin/python3`` is played by a stand-in that answers like Python 3.10 does.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import ROOT
from tests.provision.test_ansible import ANSIBLE, _ansible_env, _recap, _tool

GROUPS = {"rpi5": "pi", "rpi4": "pi4", "jetson_orin_nano": "jetson", "generic_x86": "x86"}
CHECK = {"ansible.builtin.include_role": {"name": "agent", "tasks_from": "python"}}
PLAYBOOK = [{"name": "The agent's Python", "hosts": "vigie_agents", "gather_facts": False, "tasks": [CHECK]}]


def _run(tmp_path: Path, host_vars: dict[str, dict[str, str]]) -> subprocess.CompletedProcess[str]:
    """The role's Python check for one host per profile group (host vars added), verbose."""
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    children = {
        group: {"hosts": {host: {**local, **host_vars.get(host, {})}}} for group, host in GROUPS.items()
    }
    inventory = tmp_path / "inventory"
    inventory.mkdir()
    (inventory / "hosts.yml").write_text(yaml.safe_dump({"vigie_agents": {"children": children}}))
    (inventory / "group_vars").symlink_to(ANSIBLE / "group_vars")
    playbook = tmp_path / "python.yml"
    playbook.write_text(yaml.safe_dump(PLAYBOOK, sort_keys=False))
    env = {**_ansible_env(), "ANSIBLE_ROLES_PATH": str(ANSIBLE / "roles")}
    return subprocess.run(
        [_tool("ansible-playbook"), "-v", "-i", str(inventory), str(playbook),
         "-e", f"vigie_firmware_dir={ROOT / 'firmware_configs'}"],
        cwd=ANSIBLE, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip


def _python_of(output: str, host: str) -> str:
    """The interpreter the role ran for a host (from the verbose result of the version read)."""
    task = output.split("TASK [agent : Read the version of the agent's Python]")[1].split("TASK [")[0]
    result = task.split(f"[{host}] =>")[1].split("\nok: [")[0].split("\nfatal: [")[0]
    return str(yaml.safe_load(result)["cmd"][0])


def test_each_profile_gets_a_python_of_at_least_3_11(tmp_path: Path) -> None:
    done = _run(tmp_path, {})
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    # Raspberry Pi OS and Debian bookworm: their python3 (3.11); Ubuntu 22.04 (Jetson): its python3.11.
    assert {host: _python_of(done.stdout, host) for host in GROUPS.values()} == {
        "pi": "/usr/bin/python3", "pi4": "/usr/bin/python3", "x86": "/usr/bin/python3",
        "jetson": "/usr/bin/python3.11",
    }  # fmt: skip
    jetson = yaml.safe_load((ANSIBLE / "group_vars" / "jetson_orin_nano.yml").read_text())
    assert jetson["agent_python_packages"] == ["python3.11", "python3.11-venv"]  # Ubuntu 22.04's own packages
    for host in GROUPS.values():
        assert _recap(done.stdout, host)["failed"] == 0


def test_a_python_older_than_3_11_is_refused_with_the_fix(tmp_path: Path) -> None:
    # Ubuntu 22.04's /usr/bin/python3 as the Jetson's agent Python: a stand-in that answers 3.10.
    old = tmp_path / "python3.10"
    old.write_text("#!/bin/sh\necho 3.10\n")
    old.chmod(0o755)
    done = _run(
        tmp_path, {"jetson": {"agent_python": str(old)}, "pi": {"agent_python": "/nonexistent/python3"}}
    )
    assert done.returncode != 0
    assert (
        f"jetson: the agent needs Python >= 3.11, and {old} is 3.10 on this jetson-orin-nano box"
        in done.stdout
    )
    assert "Set agent_python (and agent_python_packages) for its group" in done.stdout
    assert "pi: the agent needs Python >= 3.11, and /nonexistent/python3 does not run" in done.stdout
    assert _recap(done.stdout, "x86")["failed"] == 0
    assert os.access(sys.executable, os.X_OK)
