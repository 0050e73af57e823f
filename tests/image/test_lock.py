"""The package lock against a moved mirror: a local apt repository stands in for Debian's,
and a locked version is replaced in it as a point release would. apt itself (a scratch
directory, image/mirror.py) says what the sources have; nothing is stubbed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from image.debcache import DebCache
from image.lock import LockError, changes, lock_mode, plan
from image.mirror import MirrorIndex


def make_deb(out: Path, name: str, version: str, depends: str = "") -> Path:
    """A real .deb, built by dpkg-deb."""
    tree = out / f"tree-{name}-{version}"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / f"usr/share/{name}").mkdir(parents=True)
    (tree / f"usr/share/{name}/version").write_text(version + "\n")
    control = (f"Package: {name}\nVersion: {version}\nArchitecture: all\n"
               f"Maintainer: Test <test@example.invalid>\n"
               + (f"Depends: {depends}\n" if depends else "") + f"Description: {name}\n")
    (tree / "DEBIAN/control").write_text(control)
    deb = out / f"{name}_{version}_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(tree), str(deb)],
                   check=True, capture_output=True, env={"SOURCE_DATE_EPOCH": "1700000000",
                                                        "PATH": "/usr/bin:/bin"})
    shutil.rmtree(tree)
    return deb


class Mirror:
    """A flat apt repository whose index is rewritten as packages come and go."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True)
        self.cache = DebCache(directory / "index")

    def publish(self, *debs: Path) -> None:
        shutil.rmtree(self.cache.dir, ignore_errors=True)
        self.cache.open().add(list(debs))

    @property
    def source(self) -> str:
        return f"deb [trusted=yes] file://{self.cache.dir} ./"


@pytest.fixture
def debs(tmp_path: Path) -> dict[str, Path]:
    built = tmp_path / "built"
    built.mkdir()
    return {"tool=1.0": make_deb(built, "tool", "1.0", "libtool-data"),
            "tool=1.1": make_deb(built, "tool", "1.1", "libtool-data"),
            "libtool-data=2.0": make_deb(built, "libtool-data", "2.0")}


@pytest.fixture
def mirror(tmp_path: Path, debs: dict[str, Path]) -> Mirror:
    # named like Debian's security archive, so what it serves counts as a security update
    mirror = Mirror(tmp_path / "debian-security")
    mirror.publish(debs["tool=1.0"], debs["libtool-data=2.0"])
    return mirror


LOCK = ["libtool-data=2.0", "tool=1.0"]


def test_a_lock_the_mirror_still_has_is_installed_as_locked(mirror: Mirror) -> None:
    with MirrorIndex([mirror.source]) as index:
        found = plan(LOCK, index, "adapt", ["tool"])
    assert found.pins == LOCK and not found.refresh and found.stale == []


def test_a_moved_mirror_makes_an_adapting_build_re_resolve_the_lock(
        mirror: Mirror, debs: dict[str, Path]) -> None:
    mirror.publish(debs["tool=1.1"], debs["libtool-data=2.0"])  # the point release
    with MirrorIndex([mirror.source]) as index:
        found = plan(LOCK, index, "adapt", ["tool"])
    assert found.refresh and found.pins == []
    assert [(m.name, m.locked, m.newest.version if m.newest else None)
            for m in found.stale] == [("tool", "1.0", "1.1")]


def test_a_moved_mirror_stops_a_strict_build_naming_the_package_and_the_command(
        mirror: Mirror, debs: dict[str, Path]) -> None:
    mirror.publish(debs["tool=1.1"], debs["libtool-data=2.0"])
    with MirrorIndex([mirror.source]) as index, pytest.raises(LockError) as refused:
        plan(LOCK, index, "strict", ["tool"])
    message = refused.value.message
    assert "tool=1.0 is gone: the sources have 1.1 (security update)" in message
    assert "make image-lock" in message and "libtool-data" not in message


def test_the_package_cache_keeps_a_locked_version_the_mirror_dropped(
        tmp_path: Path, mirror: Mirror, debs: dict[str, Path]) -> None:
    cache = DebCache(tmp_path / "cache").open()
    cache.add([debs["tool=1.0"], debs["libtool-data=2.0"]])  # what the last build installed
    mirror.publish(debs["tool=1.1"], debs["libtool-data=2.0"])
    with MirrorIndex([cache.source, mirror.source]) as index:
        found = plan(LOCK, index, "strict", ["tool"])
    assert found.pins == LOCK and not found.refresh


def test_the_cache_stores_each_package_once_by_its_sha256(
        tmp_path: Path, debs: dict[str, Path]) -> None:
    cache = DebCache(tmp_path / "cache").open()
    assert cache.add([debs["tool=1.0"]]) == 1
    assert cache.add([debs["tool=1.0"]]) == 0
    entry = cache.find("tool", "1.0")
    assert entry is not None and (cache.blobs / f"{entry.sha256}.deb").is_file()
    assert "Filename: sha256/" in (cache.dir / "Packages").read_text()


def test_moved_packages_are_listed_with_old_and_new_versions_and_security_marked(
        mirror: Mirror, debs: dict[str, Path]) -> None:
    mirror.publish(debs["tool=1.1"], debs["libtool-data=2.0"])
    with MirrorIndex([mirror.source]) as index:
        moved = changes([*LOCK, "gone=3"], ["libtool-data=2.0", "tool=1.1", "new=1"], index)
    assert [c.describe() for c in moved] == [
        "gone: 3 -> (removed)", "new: (new) -> 1", "tool: 1.0 -> 1.1 (security)"]


def test_a_package_added_to_image_toml_re_resolves_the_lock(mirror: Mirror) -> None:
    with MirrorIndex([mirror.source]) as index:
        assert plan(LOCK, index, "adapt", ["tool", "extra"]).refresh
        with pytest.raises(LockError, match="asks for extra"):
            plan(LOCK, index, "strict", ["tool", "extra"])


def test_the_lock_mode_comes_from_IMAGE_LOCK_and_a_wrong_one_is_refused() -> None:
    assert lock_mode({}) == "adapt"
    assert lock_mode({"IMAGE_LOCK": "strict"}) == "strict"
    with pytest.raises(LockError, match="expected one of adapt, strict, refresh"):
        lock_mode({"IMAGE_LOCK": "loose"})


def test_a_source_apt_cannot_read_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="apt could not read the package sources"):
        MirrorIndex([f"deb [trusted=yes] file://{tmp_path}/nowhere ./"]).update()


@pytest.mark.image  # needs mmdebstrap (make image-deps)
def test_mmdebstrap_installs_a_locked_version_from_the_cache_after_the_mirror_dropped_it(
        tmp_path: Path, mirror: Mirror, debs: dict[str, Path]) -> None:
    cache = DebCache(tmp_path / "cache").open()
    cache.add([debs["tool=1.0"], debs["libtool-data=2.0"]])
    mirror.publish(debs["tool=1.1"], debs["libtool-data=2.0"])
    root = tmp_path / "root"
    subprocess.run(["mmdebstrap", "--variant=extract", "--mode=root", "--format=directory",
                    f"--include={','.join(LOCK)}", "bookworm", str(root), cache.source,
                    mirror.source], check=True, capture_output=True)
    assert (root / "usr/share/tool/version").read_text() == "1.0\n"
    assert (root / "usr/share/libtool-data/version").read_text() == "2.0\n"
