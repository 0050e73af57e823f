"""The bundle manifest: what a bundle claims to hold, and the exact bytes that are signed.

Format 1. The manifest names the release (``version``, PEP 440), the boxes it fits
(``compatible``), the oldest running version allowed to install it (``min_version``), and
for every payload its size and sha256 (the root filesystem also uncompressed, so the slot can
be read back and checked). Canonical JSON (sorted keys, no spaces) is what is signed, so the
bytes in the bundle are the bytes that were verified.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from packaging.version import InvalidVersion, Version

from appliance.update.errors import UpdateRefused

FORMAT = 1
ROOTFS = "rootfs.ext4.zst"
KERNEL = "vmlinuz"
INITRD = "initrd.img"
PAYLOADS = (INITRD, ROOTFS, KERNEL)  # sorted: the order they have in the bundle
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
MAX_HEAD_BYTES = 1 << 20  # manifest and signature are small; anything bigger is not ours
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_FIELDS = {"format", "name", "version", "compatible", "min_version", "created", "payloads"}


@dataclass(frozen=True)
class Payload:
    sha256: str
    size: int
    raw_sha256: str | None = None  # the root filesystem only: after decompression
    raw_size: int | None = None

    def to_json(self) -> dict[str, Any]:
        found: dict[str, Any] = {"sha256": self.sha256, "size": self.size}
        if self.raw_sha256 is not None:
            found |= {"raw_sha256": self.raw_sha256, "raw_size": self.raw_size}
        return found


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    compatible: str
    min_version: str
    created: int
    payloads: dict[str, Payload]
    format: int = FORMAT

    def to_json(self) -> dict[str, Any]:
        return {"format": self.format, "name": self.name, "version": self.version,
                "compatible": self.compatible, "min_version": self.min_version,
                "created": self.created,
                "payloads": {name: p.to_json() for name, p in sorted(self.payloads.items())}}

    def canonical(self) -> bytes:
        """The signed bytes."""
        return canonical_json(self.to_json())

    @property
    def rootfs(self) -> Payload:
        return self.payloads[ROOTFS]


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def parse_version(text: str, what: str) -> Version:
    try:
        return Version(text)
    except InvalidVersion:
        raise UpdateRefused(f"{what} {text!r} is not a PEP 440 version") from None


def _int(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise UpdateRefused(f"manifest: {what} must be a non-negative integer")
    return value


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise UpdateRefused(f"manifest: {what} must be a non-empty string")
    return value


def _sha(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _SHA256.match(value):
        raise UpdateRefused(f"manifest: {what} must be 64 lower-case hex digits")
    return value


def _payload(name: str, value: Any) -> Payload:
    if not isinstance(value, dict):
        raise UpdateRefused(f"manifest: payload {name} must be an object")
    raw = name == ROOTFS
    expected = {"sha256", "size"} | ({"raw_sha256", "raw_size"} if raw else set())
    if set(value) != expected:
        raise UpdateRefused(f"manifest: payload {name} must have exactly "
                            f"{', '.join(sorted(expected))}")
    return Payload(_sha(value["sha256"], f"{name}.sha256"), _int(value["size"], f"{name}.size"),
                   _sha(value["raw_sha256"], f"{name}.raw_sha256") if raw else None,
                   _int(value["raw_size"], f"{name}.raw_size") if raw else None)


def parse(data: bytes) -> Manifest:
    """A manifest from its (already signature-checked) bytes, or UpdateRefused."""
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UpdateRefused(f"manifest: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise UpdateRefused("manifest: must be a JSON object")
    if value.get("format") != FORMAT:
        raise UpdateRefused(f"manifest: format {value.get('format')!r} is not supported "
                            f"(this box reads format {FORMAT})")
    if set(value) != _FIELDS:
        odd = sorted(set(value) ^ _FIELDS)
        raise UpdateRefused(f"manifest: unexpected or missing fields: {', '.join(odd)}")
    payloads = value["payloads"]
    if not isinstance(payloads, dict) or set(payloads) != set(PAYLOADS):
        raise UpdateRefused(f"manifest: payloads must be exactly {', '.join(PAYLOADS)}")
    manifest = Manifest(
        name=_text(value["name"], "name"), version=_text(value["version"], "version"),
        compatible=_text(value["compatible"], "compatible"),
        min_version=_text(value["min_version"], "min_version"),
        created=_int(value["created"], "created"),
        payloads={name: _payload(name, payloads[name]) for name in PAYLOADS})
    parse_version(manifest.version, "manifest: version")
    parse_version(manifest.min_version, "manifest: min_version")
    return manifest
