"""A plugin folder is signed file by file: any change after signing, and anything a plugin
must not hold, is refused with a sentence for the operator."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from appliance.plugins.package import (
    MAX_BYTES,
    MAX_FILES,
    SIGNATURE,
    PluginRefused,
    pack,
    sign_plugin,
    signed_document,
    unpack,
    verify_plugin,
)
from appliance.skills.manifest import load_manifest
from appliance.update import signing
from tests.plugins.conftest import Signer, write_plugin


def test_a_signed_plugin_verifies_with_its_key_and_names_every_file(
        plugin: Path, signer: Signer) -> None:
    verified = verify_plugin(plugin, signer.keyring)
    assert verified.manifest.plugin.name == "weather"
    assert verified.key_id == signing.key_id(signer.key.public_key())
    assert verified.files == {
        name: hashlib.sha256((plugin / name).read_bytes()).hexdigest()
        for name in ("appliance-plugin.toml", "data/towns.txt", "plugin.py")}


def test_the_signed_document_is_canonical_json_of_name_version_and_files(
        plugin: Path) -> None:
    doc = signed_document(plugin, load_manifest(plugin))
    parsed = json.loads(doc)
    assert parsed["kind"] == "plugin" and parsed["format"] == 1
    assert (parsed["name"], parsed["version"]) == ("weather", "1.0.0")
    assert sorted(parsed["files"]) == ["appliance-plugin.toml", "data/towns.txt", "plugin.py"]
    assert doc == json.dumps(parsed, sort_keys=True, separators=(",", ":")).encode()


def test_a_folder_without_plugin_sig_is_refused_as_unsigned(tmp_path: Path,
                                                            signer: Signer) -> None:
    folder = write_plugin(tmp_path / "weather")
    with pytest.raises(PluginRefused, match=r"unsigned plugin: no plugin\.sig"):
        verify_plugin(folder, signer.keyring)


def test_a_file_changed_after_signing_is_refused(plugin: Path, signer: Signer) -> None:
    (plugin / "plugin.py").write_text("import os; os.system('curl evil')\n")
    with pytest.raises(PluginRefused, match=r"bad signature: files .* changed"):
        verify_plugin(plugin, signer.keyring)


def test_a_file_added_after_signing_is_refused(plugin: Path, signer: Signer) -> None:
    (plugin / "extra.py").write_text("print('hello')\n")
    with pytest.raises(PluginRefused, match="bad signature"):
        verify_plugin(plugin, signer.keyring)


def test_a_file_removed_after_signing_is_refused(plugin: Path, signer: Signer) -> None:
    (plugin / "data" / "towns.txt").unlink()
    with pytest.raises(PluginRefused, match="bad signature"):
        verify_plugin(plugin, signer.keyring)


def test_a_plugin_signed_by_a_key_outside_the_keyring_is_refused(
        tmp_path: Path, signer: Signer, stranger: Signer) -> None:
    folder = write_plugin(tmp_path / "weather")
    sign_plugin(folder, stranger.key)
    kid = signing.key_id(stranger.key.public_key())
    with pytest.raises(PluginRefused, match=f"signed by key {kid}, which is not in this "
                       "box's plugin keyring"):
        verify_plugin(folder, signer.keyring)


def test_a_signature_file_that_is_not_a_signature_is_refused(plugin: Path,
                                                             signer: Signer) -> None:
    (plugin / SIGNATURE).write_text("trust me")
    with pytest.raises(PluginRefused, match=r"plugin\.sig is not a signature document"):
        verify_plugin(plugin, signer.keyring)


def test_byte_caches_are_not_signed_content(plugin: Path, signer: Signer) -> None:
    (plugin / "__pycache__").mkdir()
    (plugin / "__pycache__" / "plugin.cpython-311.pyc").write_bytes(b"\x00cache")
    (plugin / "data" / "stray.pyc").write_bytes(b"\x00cache")
    assert "__pycache__/plugin.cpython-311.pyc" not in verify_plugin(plugin,
                                                                     signer.keyring).files


def test_a_missing_program_is_refused(tmp_path: Path, signer: Signer) -> None:
    folder = write_plugin(tmp_path / "weather")
    (folder / "plugin.py").unlink()
    with pytest.raises(PluginRefused, match=r"program plugin.py \(plugin.entry\) is not there"):
        sign_plugin(folder, signer.key)


def test_a_broken_manifest_is_refused_with_the_manifest_problem(plugin: Path,
                                                               signer: Signer) -> None:
    (plugin / "appliance-plugin.toml").write_text('[plugin]\nname = "Weather!"\n')
    with pytest.raises(PluginRefused, match=r"plugin\.name"):
        verify_plugin(plugin, signer.keyring)


def test_a_symlink_in_the_folder_is_refused(tmp_path: Path, signer: Signer) -> None:
    folder = write_plugin(tmp_path / "weather")
    (folder / "passwd").symlink_to("/etc/passwd")
    with pytest.raises(PluginRefused, match="passwd is a symbolic link"):
        sign_plugin(folder, signer.key)


def test_a_fifo_in_the_folder_is_refused(tmp_path: Path, signer: Signer) -> None:
    folder = write_plugin(tmp_path / "weather")
    os.mkfifo(folder / "pipe")
    with pytest.raises(PluginRefused, match="pipe is not a regular file"):
        sign_plugin(folder, signer.key)


def test_more_than_the_file_limit_is_refused(tmp_path: Path, signer: Signer) -> None:
    folder = write_plugin(tmp_path / "weather")
    for n in range(MAX_FILES):
        (folder / "data" / f"{n}.txt").write_text("x")
    with pytest.raises(PluginRefused, match=f"more than {MAX_FILES} files"):
        sign_plugin(folder, signer.key)


def test_more_than_the_size_limit_is_refused(tmp_path: Path, signer: Signer) -> None:
    folder = write_plugin(tmp_path / "weather")
    with (folder / "data" / "big.bin").open("wb") as handle:
        handle.truncate(MAX_BYTES + 1)  # sparse: the size counts, not the disk
    with pytest.raises(PluginRefused, match="more than 50 MB"):
        sign_plugin(folder, signer.key)


def test_pack_makes_name_version_archive_of_relative_members(plugin: Path,
                                                             tmp_path: Path) -> None:
    archive = pack(plugin, tmp_path / "out")
    assert archive.name == "weather-1.0.0.plugin.tar.gz"
    with tarfile.open(archive) as tar:
        assert sorted(tar.getnames()) == ["appliance-plugin.toml", "data/towns.txt",
                                          "plugin.py", "plugin.sig"]


def test_packing_twice_gives_the_same_bytes(plugin: Path, tmp_path: Path) -> None:
    first = pack(plugin, tmp_path / "one").read_bytes()
    os.utime(plugin / "plugin.py", (0, 1_000_000))
    assert pack(plugin, tmp_path / "two").read_bytes() == first


def test_pack_refuses_an_unsigned_folder(tmp_path: Path) -> None:
    folder = write_plugin(tmp_path / "weather")
    with pytest.raises(PluginRefused, match="unsigned plugin"):
        pack(folder, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_unpacked_archive_verifies(plugin: Path, tmp_path: Path, signer: Signer) -> None:
    unpack(pack(plugin, tmp_path / "out"), tmp_path / "unpacked")
    assert verify_plugin(tmp_path / "unpacked", signer.keyring).manifest.plugin.name == \
        "weather"


def _archive(path: Path, *members: tuple[tarfile.TarInfo, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            info.size = len(data) if info.isfile() else 0
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return path


def _member(name: str, kind: bytes = tarfile.REGTYPE, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


@pytest.mark.parametrize(("member", "problem"), [
    (_member("../evil.py"), "points outside"),
    (_member("/etc/cron.d/evil"), "points outside"),
    (_member("plugin.py", tarfile.SYMTYPE, "/etc/passwd"), "is a link"),
    (_member("plugin.py", tarfile.LNKTYPE, "/etc/passwd"), "is a link"),
    (_member("disk", tarfile.BLKTYPE), "not a regular file"),
    (_member("pipe", tarfile.FIFOTYPE), "not a regular file"),
], ids=["dotdot", "absolute", "symlink", "hardlink", "device", "fifo"])
def test_unpack_refuses_members_that_leave_the_folder_or_are_not_files(
        tmp_path: Path, member: tarfile.TarInfo, problem: str) -> None:
    archive = _archive(tmp_path / "evil.plugin.tar.gz",
                       (_member("appliance-plugin.toml"), b""), (member, b"x"))
    with pytest.raises(PluginRefused, match=problem):
        unpack(archive, tmp_path / "into")
    assert not (tmp_path / "into").exists()
    assert not (tmp_path / "evil.py").exists()


def test_unpack_refuses_more_than_the_size_limit(tmp_path: Path) -> None:
    big = tmp_path / "big.plugin.tar.gz"
    with tarfile.open(big, "w:gz", compresslevel=1) as tar:
        info = _member("data/big.bin")
        info.size = MAX_BYTES + 1
        with (tmp_path / "zeros").open("wb") as zeros:
            zeros.truncate(info.size)
        with (tmp_path / "zeros").open("rb") as source:
            tar.addfile(info, source)
    with pytest.raises(PluginRefused, match="more than 50 MB"):
        unpack(big, tmp_path / "into")
    assert not (tmp_path / "into").exists()


def test_a_file_that_is_not_an_archive_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.plugin.tar.gz"
    junk.write_bytes(b"not a tar at all")
    with pytest.raises(PluginRefused, match="not a readable plugin archive"):
        unpack(junk, tmp_path / "into")
