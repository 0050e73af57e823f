"""Decide whether a bundle may be installed on this box, reading it once and writing nothing.

In order: the signature (by a key in the keyring) over the manifest's exact bytes; the
manifest; the box (``compatible``); the versions (no downgrade or reinstall without
``force``; the running version at least ``min_version``, forced or not); then every payload's
size and sha256, streamed. The first failure is an UpdateRefused that says which.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from packaging.version import Version

from appliance.update import manifest as manifest_module
from appliance.update import signing
from appliance.update.errors import UpdateRefused
from appliance.update.manifest import Manifest
from appliance.update.reader import Progress, open_bundle
from appliance.update.release import Release


@dataclass(frozen=True)
class Verified:
    manifest: Manifest
    signed_bytes: bytes  # the manifest exactly as signed, to hold the second pass to it
    key_id: str


def check_head(manifest_bytes: bytes, signature: bytes,
               keyring: signing.Keyring) -> Verified:
    kid = signing.verify(manifest_bytes, signature, keyring)
    return Verified(manifest_module.parse(manifest_bytes), manifest_bytes, kid)


def check_fits(manifest: Manifest, release: Release, force: bool = False) -> None:
    """This box may take this release (compatible, version order, minimum version)."""
    if manifest.compatible != release.compatible:
        raise UpdateRefused(f"bundle is for {manifest.compatible!r}, this box is "
                            f"{release.compatible!r}")
    new, running = Version(manifest.version), Version(release.version)
    if running < Version(manifest.min_version):
        raise UpdateRefused(f"this box runs {release.version}; the bundle {manifest.version} "
                            f"installs only over {manifest.min_version} or later (install an "
                            "intermediate release first)")
    if new == running and not force:
        raise UpdateRefused(f"{manifest.version} is already running (--force reinstalls it)")
    if new < running and not force:
        raise UpdateRefused(f"{manifest.version} is older than the running {release.version} "
                            "(a downgrade needs --force)")


def verify_bundle(path: Path, keyring: signing.Keyring, release: Release, *,
                  force: bool = False, progress: Progress | None = None) -> Verified:
    """The whole first pass: head, fit, then every payload hashed. Writes nothing."""
    with open_bundle(path) as bundle:
        verified = check_head(*bundle.head(), keyring)
        check_fits(verified.manifest, release, force)
        bundle.payloads(verified.manifest, progress=progress)
    return verified
