"""The systemd unit the role installs on plain hosts, rendered by Ansible's own template module
and checked by ``systemd-analyze verify`` (no systemd runs here, so the unit is not started:
the fleet tests run the service with ``appliance service`` instead)."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "ansible" / "roles" / "appliance" / "templates" / "appliance.service.j2"
ANSIBLE = Path(sys.executable).with_name("ansible")

pytestmark = pytest.mark.skipif(
    not ANSIBLE.exists() or shutil.which("systemd-analyze") is None,
    reason="needs ansible-core and systemd-analyze (make debian-test-deps)")


@pytest.fixture()
def unit(tmp_path: Path) -> Path:
    """The unit as the role renders it for a host whose root is ``tmp_path``."""
    program = tmp_path / "opt/appliance/current/venv/bin/appliance"
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    (tmp_path / "ansible.cfg").touch()
    out = tmp_path / "appliance.service"
    variables = {"appliance_user": "appliance", "appliance_home": f"{tmp_path}/opt/appliance",
                 "appliance_config_file": f"{tmp_path}/etc/appliance/appliance.toml",
                 "appliance_data": f"{tmp_path}/var/lib/appliance"}
    subprocess.run(
        [str(ANSIBLE), "localhost", "-c", "local", "-m", "ansible.builtin.template",
         "-a", f"src={TEMPLATE} dest={out}",
         "-e", f"ansible_python_interpreter={sys.executable}",
         *[arg for key, value in variables.items() for arg in ("-e", f"{key}={value}")]],
        cwd=tmp_path, check=True, capture_output=True, timeout=120,
        env={"PATH": str(ANSIBLE.parent) + ":/usr/bin:/bin", "HOME": str(tmp_path),
             "ANSIBLE_CONFIG": str(tmp_path / "ansible.cfg"),
             "ANSIBLE_LOCALHOST_WARNING": "0"})
    return out


def test_the_rendered_unit_passes_systemd_analyze_verify(unit: Path) -> None:
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                          text=True, timeout=60, check=False)

    assert done.returncode == 0, done.stderr
    assert "Failed to parse" not in done.stderr and "Unknown key" not in done.stderr, done.stderr


def test_the_unit_runs_the_current_release_as_the_service_user(unit: Path) -> None:
    service = configparser.ConfigParser(strict=False, interpolation=None)
    service.read(unit)

    assert service["Service"]["ExecStart"].endswith("/opt/appliance/current/venv/bin/appliance up")
    assert service["Service"]["User"] == "appliance"


def test_the_unit_can_write_only_the_data_folder(unit: Path) -> None:
    service = configparser.ConfigParser(strict=False, interpolation=None)
    service.read(unit)

    assert service["Service"]["ProtectSystem"] == "strict"
    assert service["Service"]["ReadWritePaths"].endswith("/var/lib/appliance")
    assert service["Service"]["NoNewPrivileges"] == "yes"
