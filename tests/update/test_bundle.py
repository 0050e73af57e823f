"""Bundles: reproducible bytes, the member layout, and the signing keys."""

from __future__ import annotations

import json
import stat
import tarfile
from pathlib import Path

import pytest
import zstandard

from appliance.update import signing
from appliance.update.bundle import build_bundle
from appliance.update.errors import UpdateRefused
from appliance.update.manifest import parse
from tests.update.conftest import Box, payload_bytes


def inputs(folder: Path, seed: int = 5) -> tuple[Path, Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / "rootfs.ext4", folder / "vmlinuz", folder / "initrd.img"
    for n, path in enumerate(paths):
        path.write_bytes(payload_bytes(seed + n, (4 << 20) if n == 0 else 200_000))
    return paths


def test_the_same_inputs_give_the_same_bundle_bytes(box: Box, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    rootfs, kernel, initrd = inputs(tmp_path / "in")
    first, second = tmp_path / "one" / "x.bundle", tmp_path / "two" / "y.bundle"
    build_bundle(rootfs, kernel, initrd, "0.2.0", box.key, first)
    build_bundle(rootfs, kernel, initrd, "0.2.0", box.key, second)
    assert first.read_bytes() == second.read_bytes()


def test_zstd_gives_the_same_bytes_whatever_the_thread_count() -> None:
    data = payload_bytes(9, 6 << 20)
    outputs = {zstandard.ZstdCompressor(level=10, threads=n).compress(data) for n in (1, 2, 4)}
    assert len(outputs) == 1


def test_members_come_in_order_with_fixed_metadata(box: Box, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1600000000")
    rootfs, kernel, initrd = inputs(tmp_path / "in")
    out = tmp_path / "b.bundle"
    manifest = build_bundle(rootfs, kernel, initrd, "0.2.0", box.key, out, created=1_650_000_000)
    with tarfile.open(out) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["manifest.json", "manifest.sig", "initrd.img",
                                             "rootfs.ext4.zst", "vmlinuz"]
        assert {(m.mode, m.uid, m.gid, m.uname, m.gname, m.mtime) for m in members} == {
            (0o644, 0, 0, "", "", 1_600_000_000)}
        signed = tar.extractfile("manifest.json").read()  # type: ignore[union-attr]
        signature = json.loads(tar.extractfile("manifest.sig").read())  # type: ignore[union-attr]
        compressed = tar.extractfile("rootfs.ext4.zst").read()  # type: ignore[union-attr]
    assert signed == manifest.canonical() and parse(signed) == manifest
    assert (manifest.created, manifest.rootfs.raw_size) == (1_650_000_000, 4 << 20)
    assert signature["algorithm"] == "ed25519"
    assert signature["key_id"] == signing.key_id(box.key.public_key())
    assert zstandard.ZstdDecompressor().decompress(compressed) == rootfs.read_bytes()


def test_keygen_writes_a_private_key_only_its_owner_reads(tmp_path: Path) -> None:
    private, public = signing.generate_keypair(tmp_path / "keys", "builder")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert public.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    ring = signing.load_keyring(tmp_path / "keys")
    assert list(ring) == [signing.key_id(signing.load_private_key(private).public_key())]


def test_keygen_never_replaces_a_key(tmp_path: Path) -> None:
    signing.generate_keypair(tmp_path, "builder")
    with pytest.raises(UpdateRefused, match="exists"):
        signing.generate_keypair(tmp_path, "builder")


def test_a_version_that_is_not_pep_440_is_refused_at_build_time(box: Box,
                                                                tmp_path: Path) -> None:
    rootfs, kernel, initrd = inputs(tmp_path / "in")
    with pytest.raises(UpdateRefused, match="not a PEP 440 version"):
        build_bundle(rootfs, kernel, initrd, "next-friday", box.key, tmp_path / "x.bundle")
