"""``make image``: wheelhouse, root tree, filesystems, disk, update bundle, manifest.

Outputs in ``build/image/`` (or ``IMAGE_OUT``): ``disk.img`` (GPT: esp, root-a, root-b, data),
``rootfs.ext4``, ``vmlinuz`` and ``initrd.img``, ``appliance-<version>.bundle`` and
``manifest.json`` with the sha256 of each. The intermediate tree stays in ``work/`` for
``image-verify`` to compare file by file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from image import disk, filesystems, rootfs
from image.debcache import DebCache
from image.lock import (
    LockMode,
    LockPlan,
    changes,
    check_lock,
    lock_mode,
    plan,
    read_lock,
    show_changes,
    write_lock,
)
from image.mirror import MirrorIndex
from image.sbom import write_sbom
from image.spec import KEYRING_DIR, BuildInputs, BuildState, ImageSpec, load_spec
from image.wheelhouse import build_wheelhouse

console = Console(stderr=True, soft_wrap=True)
OUTPUTS = ("disk.img", "rootfs.ext4", "vmlinuz", "initrd.img")
SBOM = "sbom.cdx.json"


@dataclass
class Timings:
    steps: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        with console.status(f"[bold]{name}[/bold]"):
            yield
        self.steps[name] = round(time.monotonic() - started, 1)
        console.print(f"  {name}: {self.steps[name]:.0f} s")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(4 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def signing_key(inputs: BuildInputs) -> Path:
    """The bundle signing key: IMAGE_SIGNING_KEY, or a development key made once per clone."""
    from appliance.update.signing import generate_keypair

    key = inputs.signing_key
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True)
        generated, _ = generate_keypair(key.parent, key.stem)
        console.print(f"[yellow]made a development signing key {generated}; production "
                      "builds set IMAGE_SIGNING_KEY[/yellow]")
    return key


def keyring_files(key: Path) -> list[str]:
    """The public keys the image trusts: image/keyring/*.pub and this build's key."""
    files = sorted(str(p) for p in KEYRING_DIR.glob("*.pub"))
    own = key.with_suffix(".pub")
    if not own.is_file():
        raise SystemExit(f"{own} is missing: the image would not trust its own bundles")
    return sorted({*files, str(own)})


def data_skeleton(work: Path, uid: int) -> Path:
    """The data partition as flashed: empty directories with their owners, nothing secret."""
    skel = work / "data"
    shutil.rmtree(skel, ignore_errors=True)
    for relative, mode, owner in (("appliance", 0o750, uid), ("etc/appliance", 0o755, 0),
                                  ("ssh", 0o700, 0), ("ssh/authorized_keys", 0o700, 0),
                                  ("journal", 0o2755, 0)):
        path = skel / relative
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(mode)
        os.chown(path, owner, owner)
    return skel


def package_sources(inputs: BuildInputs, spec: ImageSpec, cache: DebCache) -> list[str]:
    """Where this build reads packages: the cache first, then the mirror (the image's own
    sources.list is always spec.mirrors)."""
    return [cache.source] if inputs.offline else [cache.source, *spec.mirrors]


def plan_packages(index: MirrorIndex, spec: ImageSpec, mode: LockMode) -> LockPlan:
    locked = read_lock()
    lock_plan = plan(locked, index, mode, spec.packages)
    console.print(f"  packages ({mode}): {lock_plan.reason}")
    for missing in lock_plan.stale:
        console.print(f"  [yellow]{missing.describe()}[/yellow]", highlight=False)
    return lock_plan


def build_root_tree(spec: ImageSpec, state: BuildState, work: Path, lock_plan: LockPlan,
                    index: MirrorIndex, cache: DebCache, sources: list[str]) -> list[str]:
    """mmdebstrap and the appliance; the .debs into the cache; the lock checked or
    rewritten. Returns the installed name=version list."""
    state_file = work / "state.json"
    state.save(state_file)
    rootfs.build_root(spec, state, work / "root", state_file, work / "mmdebstrap.log",
                      lock_plan.pins or spec.packages, sources)
    installed = [line for line in (work / "packages.txt").read_text().splitlines() if line]
    added = cache.add(sorted((work / "debs").glob("*.deb")))
    console.print(f"  package cache {cache.dir}: {added} new .deb files")
    if lock_plan.refresh:
        show_changes(changes(read_lock(), installed, index))
        write_lock(installed)
    else:
        check_lock(lock_plan.pins, installed)
    return installed


def build(inputs: BuildInputs, spec: ImageSpec | None = None,
          stop_after_root: bool = False, mode: LockMode | None = None) -> dict[str, object]:
    spec = spec or load_spec()
    mode = mode or lock_mode()
    if inputs.offline and mode == "adapt":
        mode = "strict"  # nothing to re-resolve against without the mirror
    out, work = inputs.out_dir, inputs.out_dir / "work"
    work.mkdir(parents=True, exist_ok=True)
    timings = Timings()
    console.print(f"building the appliance image {inputs.version} ({inputs.commit[:12]}, "
                  f"SOURCE_DATE_EPOCH={inputs.epoch}) into {out}")
    key = signing_key(inputs)
    cache = DebCache(inputs.deb_cache).open()
    sources = package_sources(inputs, spec, cache)
    with MirrorIndex(sources) as index:
        with timings.step("package lock"):  # first: a strict build stops before any work
            lock_plan = plan_packages(index, spec, mode)
        with timings.step("wheelhouse"):
            wheels = build_wheelhouse(work / "wheelhouse", inputs.epoch)
        esp = work / "esp"
        shutil.rmtree(esp, ignore_errors=True)
        state = BuildState(version=inputs.version, commit=inputs.commit, epoch=inputs.epoch,
                           compatible=spec.compatible, hostname=spec.hostname,
                           appliance_uid=spec.appliance_uid, wheelhouse=str(wheels),
                           esp_dir=str(esp), keyring=keyring_files(key),
                           packages_out=str(work / "packages.txt"),
                           apt_sources=spec.mirrors, debs_out=str(work / "debs"))
        root = work / "root"
        with timings.step("root filesystem (mmdebstrap + appliance)"):
            installed = build_root_tree(spec, state, work, lock_plan, index, cache, sources)
            for tree in (root, esp):
                filesystems.clamp_times(tree, inputs.epoch)
    if stop_after_root:  # image-lock needs only the package list
        return {}
    with timings.step("filesystems and disk"):
        ids, sizes = spec.ids, spec.disk
        rootfs_img = filesystems.make_ext4(root, out / "rootfs.ext4", sizes.rootfs_mib, "root",
                                           ids.rootfs_uuid, ids.hash_seed, inputs.epoch)
        data = data_skeleton(work, spec.appliance_uid)
        data_img = filesystems.make_ext4(data, work / "data.ext4", sizes.data_mib, "data",
                                         ids.data_uuid, ids.hash_seed, inputs.epoch)
        esp_img = filesystems.make_vfat(esp, work / "esp.vfat", sizes.esp_mib, "ESP",
                                        ids.esp_volume_id, inputs.epoch)
        disk.assemble(spec, out / "disk.img",
                      {"esp": esp_img, "root-a": rootfs_img, "data": data_img})
        shutil.copyfile(esp / "appliance/a/vmlinuz", out / "vmlinuz")
        shutil.copyfile(esp / "appliance/a/initrd.img", out / "initrd.img")
    bundle_name = f"appliance-{inputs.version}.bundle"
    with timings.step("update bundle"):
        from appliance.update.bundle import build_bundle

        for old in out.glob("appliance-*.bundle"):
            old.unlink()
        os.environ["SOURCE_DATE_EPOCH"] = str(inputs.epoch)
        build_bundle(out / "rootfs.ext4", out / "vmlinuz", out / "initrd.img", inputs.version,
                     key, out / bundle_name, compatible=spec.compatible, created=inputs.epoch)
    with timings.step("manifest and SBOM"):
        packages = package_inventory(installed, cache, wheels)
        write_sbom(out / SBOM, inputs, packages)
        manifest = write_manifest(inputs, out, [*OUTPUTS, bundle_name, SBOM], timings,
                                  packages)
    return manifest


def package_inventory(installed: list[str], cache: DebCache, wheels: Path
                      ) -> dict[str, list[dict[str, str]]]:
    """Every Debian package and Python wheel inside the image, with its SHA-256."""
    debs = []
    for line in installed:
        name, version = line.split("=", 1)
        cached = cache.find(name, version)
        if cached is None:
            raise SystemExit(f"{name}={version} is installed but not in the package cache "
                             f"{cache.dir}: its SHA-256 cannot be recorded")
        debs.append({"name": name, "version": version, "arch": cached.arch,
                     "sha256": cached.sha256})
    python = []
    for wheel in sorted(wheels.glob("*.whl")):
        name, version = wheel.name.split("-")[:2]
        python.append({"name": name, "version": version, "file": wheel.name,
                       "sha256": sha256(wheel)})
    return {"debian": debs, "python": python}


def write_manifest(inputs: BuildInputs, out: Path, names: list[str], timings: Timings,
                   packages: dict[str, list[dict[str, str]]]) -> dict[str, object]:
    files = {name: {"sha256": sha256(out / name), "size": (out / name).stat().st_size}
             for name in names}
    manifest: dict[str, object] = {
        "version": inputs.version, "commit": inputs.commit,
        "source_date_epoch": inputs.epoch, "files": files, "packages": packages,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    (out / "build-times.json").write_text(json.dumps(timings.steps, indent=2) + "\n")
    return manifest
