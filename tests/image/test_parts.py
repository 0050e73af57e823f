"""The image's building blocks, each made twice from the same input: same bytes, no build.

These need the image tools (mke2fs, mkfs.fat, mtools, sfdisk) but not a built image.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from image import disk, filesystems
from image.filesystems import clamp_times
from image.spec import load_spec

pytestmark = pytest.mark.image
EPOCH = 1_700_000_000


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    (root / "etc/appliance").mkdir(parents=True)
    (root / "etc/appliance/appliance.toml").write_text("[http]\nport = 8080\n")
    (root / "opt").mkdir()
    (root / "opt/big.bin").write_bytes(bytes(range(256)) * 4096)
    (root / "opt/link").symlink_to("big.bin")
    clamp_times(root, EPOCH)
    return root


def test_the_same_tree_gives_the_same_ext4_bytes(tree: Path, tmp_path: Path) -> None:
    ids = load_spec().ids
    a, b = (filesystems.make_ext4(tree, tmp_path / f"{n}.ext4", 64, "root", ids.rootfs_uuid,
                                  ids.hash_seed, EPOCH) for n in "ab")
    assert digest(a) == digest(b)


def test_change_times_and_reads_of_the_tree_leave_no_trace_in_ext4(
        tree: Path, tmp_path: Path) -> None:
    # Two builds write their trees at different times (ctime) and read them (atime).
    ids = load_spec().ids
    first = filesystems.make_ext4(tree, tmp_path / "a.ext4", 64, "root", ids.rootfs_uuid,
                                  ids.hash_seed, EPOCH)
    (tree / "opt/big.bin").chmod(0o600)
    (tree / "opt/big.bin").chmod(0o644)
    (tree / "opt/big.bin").read_bytes()
    second = filesystems.make_ext4(tree, tmp_path / "b.ext4", 64, "root", ids.rootfs_uuid,
                                   ids.hash_seed, EPOCH)
    assert digest(first) == digest(second)


def test_the_same_tree_gives_the_same_fat_bytes(tree: Path, tmp_path: Path) -> None:
    ids = load_spec().ids
    a, b = (filesystems.make_vfat(tree, tmp_path / f"{n}.vfat", 64, "ESP", ids.esp_volume_id,
                                  EPOCH) for n in "ab")
    assert digest(a) == digest(b)


def test_the_disk_has_the_four_partitions_with_fixed_ids(tmp_path: Path) -> None:
    spec = load_spec()
    image = disk.assemble(spec, tmp_path / "disk.img", {})
    table = json.loads(subprocess.run(["sfdisk", "--json", str(image)], check=True,
                                      capture_output=True, text=True).stdout)["partitiontable"]
    assert table["id"].lower() == spec.ids.disk
    assert [(p["name"], p["uuid"].lower(), p["size"] // 2048) for p in table["partitions"]] == [
        ("esp", spec.ids.esp_part, spec.disk.esp_mib),
        ("root-a", spec.ids.root_a_part, spec.disk.slot_mib),
        ("root-b", spec.ids.root_b_part, spec.disk.slot_mib),
        ("data", spec.ids.data_part, spec.disk.data_mib)]


def test_two_disks_from_the_same_parts_are_identical(tree: Path, tmp_path: Path) -> None:
    spec = load_spec()
    fat = filesystems.make_vfat(tree, tmp_path / "esp.vfat", 64, "ESP", spec.ids.esp_volume_id,
                                EPOCH)
    a, b = (disk.assemble(spec, tmp_path / f"{n}.img", {"esp": fat}) for n in "ab")
    assert digest(a) == digest(b)
