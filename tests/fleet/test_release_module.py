"""ansible/library/appliance_release.py, run for real by the ad-hoc `ansible` command.

The bundles are real signed release bundles (``appliance update release-bundle``'s code)
holding one small wheel, so a release's virtualenv is built by pip in seconds; the fleet
tests install the real appliance. Here: what is refused before anything is written, and how
``current``/``previous`` move.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from appliance.update import signing
from appliance.update.bundle import write_bundle
from appliance.update.manifest import MANIFEST, SIGNATURE, canonical_json
from appliance.update.release_bundle import build_release_bundle

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ROOT / "ansible" / "library"
BIN = Path(sys.executable).parent
ANSIBLE = BIN / "ansible"
RESULT_LINE = re.compile(r"^localhost \| (SUCCESS|CHANGED|FAILED!) => ", re.MULTILINE)

pytestmark = pytest.mark.skipif(not ANSIBLE.exists(), reason="needs ansible-core (.[fleet])")


def wheel(folder: Path, version: str) -> Path:
    """A minimal, valid ``edge_appliance`` wheel (pip checks its RECORD)."""
    dist = f"edge_appliance-{version}.dist-info"
    files = {
        "edge_appliance_stub/__init__.py": f"VERSION = {version!r}\n".encode(),
        f"{dist}/METADATA": (f"Metadata-Version: 2.1\nName: edge-appliance\n"
                             f"Version: {version}\n").encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                         b"Tag: py3-none-any\n",
    }
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    files[f"{dist}/RECORD"] = ("\n".join([*record, f"{dist}/RECORD,,"]) + "\n").encode()
    path = folder / f"edge_appliance-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


@dataclass
class Host:
    root: Path
    keys: Path

    @property
    def prefix(self) -> Path:
        return self.root / "opt"

    def bundle(self, version: str) -> Path:
        house = self.root / f"house-{version}"
        house.mkdir()
        (house / "constraints.txt").write_text(f"edge-appliance=={version}\n")
        wheel(house, version)
        out = self.root / f"appliance-{version}.release"
        build_release_bundle(house, version, self.keys / "appliance-update.key", out,
                             created=1_700_000_000)
        return out

    def module(self, *flags: str, fails: bool = False, **args: object) -> dict:
        """`ansible localhost -m appliance_release -a <json>` as an operator would type it."""
        (self.root / "ansible.cfg").touch()
        env = {**os.environ, "ANSIBLE_CONFIG": str(self.root / "ansible.cfg"),
               "ANSIBLE_HOME": str(self.root / "home"), "ANSIBLE_NOCOLOR": "1",
               "ANSIBLE_LOCAL_TEMP": str(self.root / "tmp"),
               "ANSIBLE_REMOTE_TEMP": str(self.root / "tmp"),
               "ANSIBLE_LOCALHOST_WARNING": "0", "ANSIBLE_PIPELINING": "1"}
        done = subprocess.run(
            [str(ANSIBLE), "localhost", "-M", str(LIBRARY), "-m", "appliance_release",
             "-a", json.dumps({"prefix": str(self.prefix), "python": sys.executable, **args}),
             "-e", f"ansible_python_interpreter={sys.executable}", *flags],
            capture_output=True, text=True, env=env, cwd=self.root, timeout=300, check=False)
        found = RESULT_LINE.search(done.stdout)
        assert found, f"no result in ansible's output:\n{done.stdout}\n{done.stderr}"
        result, _ = json.JSONDecoder().raw_decode(done.stdout, found.end())
        assert (found[1] == "FAILED!") == fails, result.get("msg")
        result["status"] = found[1]
        return result

    def installed(self) -> list[str]:
        releases = self.prefix / "releases"
        return sorted(p.name for p in releases.iterdir()) if releases.is_dir() else []


@pytest.fixture()
def host(tmp_path: Path) -> Host:
    keys = tmp_path / "keys"
    signing.generate_keypair(keys)
    return Host(tmp_path, keys)


def test_a_release_installs_into_its_own_virtualenv(host: Host) -> None:
    result = host.module(bundle=str(host.bundle("0.2.0")))

    assert (result["status"], result["version"]) == ("CHANGED", "0.2.0")
    venv_python = host.prefix / "releases/0.2.0/venv/bin/python"
    shown = subprocess.run([venv_python, "-c", "import edge_appliance_stub as s; "
                            "print(s.VERSION)"], capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == "0.2.0"
    assert not (host.prefix / "releases/0.2.0/wheels").exists()


def test_installing_the_same_release_again_changes_nothing(host: Host) -> None:
    bundle = host.bundle("0.2.0")
    host.module(bundle=str(bundle))

    assert host.module(bundle=str(bundle))["status"] == "SUCCESS"


def test_check_mode_reports_an_install_without_writing(host: Host) -> None:
    bundle = host.bundle("0.2.0")

    result = host.module("--check", bundle=str(bundle))

    assert result["status"] == "CHANGED"
    assert host.installed() == []


def test_a_member_name_leaving_the_release_folder_is_refused(host: Host) -> None:
    bundle = host.bundle("0.2.0")
    evil_wheel = host.root / "evil.whl"
    evil_wheel.write_bytes(b"x")
    digest = hashlib.sha256(b"x").hexdigest()
    manifest = {"format": 1, "kind": "release", "name": "edge-appliance", "version": "0.2.0",
                "compatible": "edge-appliance-debian12", "min_version": "0",
                "created": 1, "install": "edge-appliance", "no_deps": [],
                "payloads": {"constraints.txt": {"sha256": digest, "size": 1},
                             "wheels/../../escape.whl": {"sha256": digest, "size": 1}}}
    data = canonical_json(manifest)
    key = signing.load_private_key(host.keys / "appliance-update.key")
    evil = host.root / "evil.release"
    write_bundle(evil, data, signing.sign(data, key),
                 {"constraints.txt": evil_wheel, "wheels/../../escape.whl": evil_wheel}, 1)
    assert bundle.exists()

    result = host.module(bundle=str(evil), fails=True)

    assert "unexpected member names" in result["msg"]
    assert not (host.prefix / "escape.whl").exists()
    assert not (host.root / "escape.whl").exists()


def test_a_wheel_differing_from_the_manifest_is_refused(host: Host) -> None:
    bundle = host.bundle("0.2.0")
    raw = bundle.read_bytes()
    marker = b"VERSION = '0.2.0'"
    # Stored uncompressed by zipfile's default, so the bytes can be flipped in place.
    assert marker in raw
    bundle.write_bytes(raw.replace(marker, b"VERSION = '6.6.6'"))

    result = host.module(bundle=str(bundle), fails=True)

    assert "bytes differ from the manifest" in result["msg"]
    assert not (host.prefix / "releases/0.2.0/.installed").exists()


def test_making_a_release_current_remembers_the_one_before(host: Host) -> None:
    for version in ("0.2.0", "0.3.0"):
        host.module(bundle=str(host.bundle(version)))
    host.module(state="current", version="0.2.0")

    result = host.module(state="current", version="0.3.0")

    assert (result["current"], result["previous"]) == ("0.3.0", "0.2.0")
    assert os.readlink(host.prefix / "current") == "releases/0.3.0"


def test_a_release_that_is_not_installed_cannot_become_current(host: Host) -> None:
    result = host.module(state="current", version="9.9.9", fails=True)

    assert "is not installed" in result["msg"]


def test_the_current_release_cannot_be_removed(host: Host) -> None:
    host.module(bundle=str(host.bundle("0.2.0")))
    host.module(state="current", version="0.2.0")

    result = host.module(state="absent", version="0.2.0", fails=True)

    assert "current or previous" in result["msg"]
    assert host.installed() == ["0.2.0"]


def test_a_release_needing_a_newer_running_one_is_refused_by_the_running_release(
        host: Host) -> None:
    host.module(bundle=str(host.bundle("0.2.0")))
    host.module(state="current", version="0.2.0")
    house = host.root / "house-0.4.0"
    house.mkdir()
    (house / "constraints.txt").write_text("")
    wheel(house, "0.4.0")
    bundle = host.root / "appliance-0.4.0.release"
    build_release_bundle(house, "0.4.0", host.keys / "appliance-update.key", bundle,
                         min_version="0.3.0", created=1)

    result = host.module(bundle=str(bundle), verify_with=str(BIN / "appliance"),
                         keyring=str(host.keys), fails=True)

    assert "needs 0.3.0 or newer running first; this host runs 0.2.0" in result["msg"]
    assert host.installed() == ["0.2.0"]


def test_a_bundle_whose_manifest_is_not_first_is_refused(host: Host) -> None:
    bundle = host.bundle("0.2.0")
    house = host.root / "house-0.2.0"
    files = {"constraints.txt": house / "constraints.txt"}
    with tarfile.open(bundle) as tar:
        head = {m.name: tar.extractfile(m).read() for m in tar  # type: ignore[union-attr]
                if m.name in (MANIFEST, SIGNATURE)}
    reordered = host.root / "reordered.release"
    with tarfile.open(reordered, "w") as tar:
        tar.add(files["constraints.txt"], arcname="constraints.txt")
        for name, data in head.items():
            (host.root / name).write_bytes(data)
            tar.add(host.root / name, arcname=name)

    result = host.module(bundle=str(reordered), fails=True)

    assert "manifest.json does not come first" in result["msg"]
