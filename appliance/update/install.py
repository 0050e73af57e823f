"""Install a verified bundle into the slot that is not running, so that a crash at any
instant leaves a box that boots.

1. Verify everything (signature, box, versions, every payload hash); nothing is written
   before this passes. Refuse if the running slot is itself still on trial, or the root
   filesystem is larger than the other slot.
2. Remove the other slot's old entries: its slot is about to be overwritten, and only the
   running slot's entry remains a boot choice.
3. Stream the bundle a second time: the root filesystem is decompressed straight onto the
   slot device, kernel and initrd go to scratch files on the ESP, and every hash is checked
   again (a bundle changed between the passes is refused here, before anything boots it).
   The slot is fsynced and read back against the manifest's ``raw_sha256``.
4. Rename kernel and initrd into ``<esp>/appliance/<slot>/``.
5. Rewrite the running slot's entry with the fallback sort-key.
6. Write the new slot's entry, ``appliance-<slot>+<trial_tries>.conf`` with the primary
   sort-key, atomically. From here systemd-boot tries the new slot once; if that boot is
   never confirmed the counter reaches zero, the entry sorts last and the old slot boots.
"""

from __future__ import annotations

import fcntl
import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

import zstandard

from appliance.config import Settings
from appliance.files import StagedFile
from appliance.update import bootloader, signing
from appliance.update.bootloader import FALLBACK, PRIMARY, Entry
from appliance.update.errors import UpdateRefused
from appliance.update.manifest import INITRD, KERNEL, ROOTFS, Manifest
from appliance.update.reader import Progress, open_bundle
from appliance.update.release import read_release
from appliance.update.slots import (
    SlotWriter,
    booted_slot,
    device_size,
    other,
    read_back,
    slot_device,
)
from appliance.update.state import Pending, record_event, state_file, write_pending
from appliance.update.verify import Verified, check_head, verify_bundle


@dataclass(frozen=True)
class Installed:
    slot: str
    version: str
    from_slot: str
    from_version: str
    entry: Path
    key_id: str


def running_entry(esp: Path, slot: str) -> Entry | None:
    """The running slot's entry (the first in boot order if there are several)."""
    found = bootloader.boot_order(bootloader.slot_entries(esp, slot))
    return found[0] if found else None


class _RawSink:
    """Decompressed root filesystem bytes: hashed, bounded by the slot, onto the device."""

    def __init__(self, writer: SlotWriter, limit: int) -> None:
        self.writer, self.limit, self.sha, self.size = writer, limit, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.size += len(data)
        if self.size > self.limit:
            raise UpdateRefused(f"the root filesystem grows past the slot's {self.limit} bytes")
        self.sha.update(data)
        self.writer.write(bytes(data))
        return len(data)


def _second_pass(bundle: Path, verified: Verified, keyring: signing.Keyring,
                 writer: SlotWriter, slot_size: int, kernel_dir: Path,
                 progress: Progress | None) -> None:
    manifest, device = verified.manifest, writer.device
    try:
        staged = {KERNEL: StagedFile(kernel_dir / KERNEL),
                  INITRD: StagedFile(kernel_dir / INITRD)}
    except BaseException:
        writer.close()
        raise
    try:
        raw = _RawSink(writer, slot_size)
        # _RawSink has the one method the decompressor calls on it (write)
        decompressor = zstandard.ZstdDecompressor().stream_writer(cast(IO[bytes], raw),
                                                                  closefd=False)
        with open_bundle(bundle) as stream:
            head = stream.head()
            if head[0] != verified.signed_bytes:
                raise UpdateRefused(f"{bundle.name} changed since it was verified; nothing "
                                    "was made bootable")
            check_head(*head, keyring)
            stream.payloads(manifest, {ROOTFS: decompressor.write, KERNEL: staged[KERNEL].write,
                                       INITRD: staged[INITRD].write}, progress, "write")
        decompressor.flush()
        if (raw.size, raw.sha.hexdigest()) != (manifest.rootfs.raw_size,
                                              manifest.rootfs.raw_sha256):
            raise UpdateRefused("the decompressed root filesystem does not match the manifest")
        writer.finish()
        for file in staged.values():
            file.finish()
        report: Callable[[int], None] | None = None
        if progress:
            def report(done: int) -> None:
                progress("read back", done, raw.size)
        if read_back(device, raw.size, report) != manifest.rootfs.raw_sha256:
            raise UpdateRefused(f"slot device {device} reads back different bytes than were "
                                "written (failing disk?)")
    except BaseException:
        writer.close()
        for file in staged.values():
            file.discard()
        raise
    for file in staged.values():
        file.commit()


def _check_slot_size(manifest: Manifest, device: Path, slot: str) -> int:
    size = device_size(device)
    if manifest.rootfs.raw_size is None or manifest.rootfs.raw_size > size:
        raise UpdateRefused(f"the root filesystem ({manifest.rootfs.raw_size} bytes) does not "
                            f"fit slot {slot} ({device}, {size} bytes)")
    return size


def _install(settings: Settings, bundle: Path, force: bool,
             progress: Progress | None) -> Installed:
    up = settings.update
    booted = booted_slot(up.cmdline_file)
    target = other(booted)
    release = read_release(up.release_file)
    keyring = signing.load_keyring(up.keyring_dir)
    current = running_entry(up.esp_dir, booted)
    if current is not None and current.counter is not None:
        raise UpdateRefused(f"the running slot {booted} is still on trial "
                            f"({current.file_name}); run 'appliance update confirm' first")
    device = slot_device(up, target)
    device_size(device)  # a missing device is refused before the long verification
    verified = verify_bundle(bundle, keyring, release, force=force, progress=progress)
    manifest = verified.manifest
    slot_size = _check_slot_size(manifest, device, target)
    writer = SlotWriter(device)  # exclusive: refused here if the slot is mounted
    # -- verified: from here on the box is written, in an order that always boots --------
    esp = up.esp_dir
    try:
        bootloader.remove_slot_entries(esp, target)
        _second_pass(bundle, verified, keyring, writer, slot_size,
                     bootloader.kernel_dir(esp, target), progress)
        bootloader.write_entry(esp, booted, bootloader.render_entry(
            booted, release.version, FALLBACK, up.kernel_options))
        entry = bootloader.write_entry(esp, target, bootloader.render_entry(
            target, manifest.version, PRIMARY, up.kernel_options), tries=up.trial_tries)
    except OSError as exc:
        writer.close()
        raise UpdateRefused(f"writing slot {target} failed: {exc}; slot {booted} stays the "
                            "boot choice") from None
    write_pending(state_file(settings), Pending(target, manifest.version, booted,
                                                release.version))
    return Installed(target, manifest.version, booted, release.version, entry, verified.key_id)


@contextmanager
def _one_at_a_time(settings: Settings) -> Iterator[None]:
    path = state_file(settings).with_name("install.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UpdateRefused("another update is being installed") from None
        yield


def install_bundle(settings: Settings, bundle: Path, *, force: bool = False,
                   progress: Progress | None = None) -> Installed:
    """Verify ``bundle`` and install it into the other slot for one trial boot; every
    refusal is an UpdateRefused (and an ``update_refused`` event)."""
    try:
        with _one_at_a_time(settings):
            done = _install(settings, bundle, force, progress)
    except UpdateRefused as exc:
        record_event(settings, "update_refused", "warning", f"{bundle.name}: {exc}")
        raise
    record_event(settings, "update_installed", "info",
                 f"{done.version} installed into slot {done.slot} (running {done.from_version} "
                 f"on slot {done.from_slot}); the next boot tries it "
                 f"{settings.update.trial_tries} time(s)", action=str(done.entry.name))
    return done
