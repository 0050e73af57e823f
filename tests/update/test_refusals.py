"""Every bad bundle is refused with a reason, and refused before anything is written: the ESP
and both slots are byte-identical afterwards."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance.update import signing
from appliance.update.bundle import write_bundle
from appliance.update.errors import UpdateRefused
from appliance.update.install import install_bundle
from appliance.update.manifest import MANIFEST, SIGNATURE
from tests.update.conftest import Box


@contextmanager
def nothing_written(box: Box) -> Iterator[None]:
    before = box.snapshot()
    yield
    assert box.snapshot() == before
    assert not (box.data / "update" / "state.json").exists()


def refused(box: Box, bundle: Path, match: str, **options: bool) -> None:
    with nothing_written(box), pytest.raises(UpdateRefused, match=match):
        install_bundle(box.settings, bundle, **options)
    assert len(box.events("update_refused")) == 1


def unpack(bundle: Path) -> dict[str, bytes]:
    with tarfile.open(bundle) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar}  # type: ignore[union-attr]


def repack(box: Box, members: dict[str, bytes], name: str) -> Path:
    """A bundle laid out by the real writer from (possibly altered) members."""
    folder = box.root / "repack" / name
    folder.mkdir(parents=True)
    payloads = {}
    for member, data in members.items():
        if member not in (MANIFEST, SIGNATURE):
            payloads[member] = folder / member
            payloads[member].write_bytes(data)
    out = box.root / "bundles" / f"{name}.bundle"
    write_bundle(out, members[MANIFEST], members[SIGNATURE], payloads, 1_700_000_000)
    return out


def test_a_manifest_changed_after_signing_is_refused(box: Box) -> None:
    members = unpack(box.make_bundle("0.2.0"))
    manifest = json.loads(members[MANIFEST])
    manifest["min_version"] = "0.0.1"
    members[MANIFEST] = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    refused(box, repack(box, members, "resigned"), "bad signature")


def test_a_bundle_signed_by_a_key_outside_the_keyring_is_refused(box: Box) -> None:
    stranger = Ed25519PrivateKey.generate()
    bundle = box.make_bundle("0.2.0", key=stranger)
    refused(box, bundle, f"key {signing.key_id(stranger.public_key())}, which is not in this "
                         "box's keyring")


def test_a_payload_that_does_not_match_its_hash_is_refused(box: Box) -> None:
    members = unpack(box.make_bundle("0.2.0"))
    kernel = bytearray(members["vmlinuz"])
    kernel[1000] ^= 0x01
    members["vmlinuz"] = bytes(kernel)
    refused(box, repack(box, members, "flipped"), "vmlinuz does not match its sha256")


def test_a_truncated_bundle_is_refused(box: Box) -> None:
    bundle = box.make_bundle("0.2.0")
    data = bundle.read_bytes()
    bundle.write_bytes(data[:len(data) // 2])
    refused(box, bundle, "truncated or damaged")


def test_a_bundle_missing_a_payload_is_refused(box: Box) -> None:
    members = unpack(box.make_bundle("0.2.0"))
    del members["initrd.img"]
    refused(box, repack(box, members, "missing"), "where initrd.img belongs")


def test_a_bundle_with_an_extra_member_is_refused(box: Box) -> None:
    bundle = box.make_bundle("0.2.0")
    with tarfile.open(bundle, "a", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo("postinstall.sh")
        info.size = 9
        tar.addfile(info, io.BytesIO(b"rm -rf /\n"))
    refused(box, bundle, "unexpected member 'postinstall.sh'")


def test_a_bundle_for_other_hardware_is_refused(box: Box) -> None:
    bundle = box.make_bundle("0.2.0", compatible="edge-appliance-aarch64")
    refused(box, bundle, "bundle is for 'edge-appliance-aarch64', this box is "
                         "'edge-appliance-x86_64'")


def test_a_downgrade_is_refused_without_force(box: Box) -> None:
    box.set_release("0.3.0")
    refused(box, box.make_bundle("0.2.0"), "older than the running 0.3.0.*--force")


def test_a_downgrade_is_installed_with_force(box: Box) -> None:
    box.set_release("0.3.0")
    done = install_bundle(box.settings, box.make_bundle("0.2.0"), force=True)
    assert (done.slot, done.version) == ("b", "0.2.0")
    assert box.next_boot().file_name == "appliance-b+1.conf"


def test_the_running_version_is_not_reinstalled_without_force(box: Box) -> None:
    refused(box, box.make_bundle("0.1.0"), "0.1.0 is already running")


def test_a_box_older_than_the_bundles_minimum_is_refused_even_with_force(box: Box) -> None:
    bundle = box.make_bundle("0.3.0", min_version="0.2.0")
    refused(box, bundle, "runs 0.1.0.*only over 0.2.0 or later", force=True)


def test_a_root_filesystem_larger_than_the_slot_is_refused(box: Box) -> None:
    with box.slot("b").open("r+b") as handle:
        handle.truncate(2 << 20)
    bundle = box.make_bundle("0.2.0", rootfs_size=3 << 20)
    refused(box, bundle, r"\(3145728 bytes\) does not fit slot b")


def test_a_box_not_booted_from_an_ab_image_is_refused(box: Box) -> None:
    box.cmdline.write_text("BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro quiet\n")
    refused(box, box.make_bundle("0.2.0"), "not booted from an A/B image")


def test_a_box_without_a_keyring_trusts_nothing(box: Box) -> None:
    for key in (box.root / "keyring").glob("*.pub"):
        key.unlink()
    refused(box, box.make_bundle("0.2.0"), "holds no \\*.pub key")
