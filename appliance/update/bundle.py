"""Build an update bundle: compress, hash, sign, and lay it out as a reproducible tar.

A bundle is an uncompressed tar (GNU format) holding ``manifest.json``, ``manifest.sig``, then
the payloads in sorted order, every member mode 0644, owner 0:0 with empty names, and one
mtime (``SOURCE_DATE_EPOCH`` when set, else the manifest's ``created``). The same inputs give
the same bytes: the image build can be checked by rebuilding, and a box can be told a bundle's
sha256 in advance.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, BinaryIO, cast

import zstandard
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance.update import signing
from appliance.update.manifest import (
    INITRD,
    KERNEL,
    MANIFEST,
    ROOTFS,
    SIGNATURE,
    Manifest,
    Payload,
    parse_version,
)

Progress = Callable[[str, int, int], None]  # (what, bytes done, bytes in all)
CHUNK = 1 << 20
DEFAULT_NAME = "edge-appliance"
DEFAULT_COMPATIBLE = "edge-appliance-x86_64"
ZSTD_LEVEL = 10


class _Hashing:
    """A file wrapper that hashes and counts what passes through it."""

    def __init__(self, handle: BinaryIO, progress: Callable[[int], None] | None = None) -> None:
        self.handle, self.sha, self.size, self.progress = handle, hashlib.sha256(), 0, progress

    def _seen(self, data: bytes) -> None:
        self.sha.update(data)
        self.size += len(data)
        if self.progress:
            self.progress(self.size)

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        self._seen(data)
        return data

    def write(self, data: bytes) -> int:
        self._seen(bytes(data))
        return self.handle.write(data)


def file_digest(path: Path) -> Payload:
    sha, size = hashlib.sha256(), 0
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            sha.update(chunk)
            size += len(chunk)
    return Payload(sha.hexdigest(), size)


def compress_rootfs(raw: Path, out: Path, level: int = ZSTD_LEVEL,
                    progress: Progress | None = None) -> Payload:
    """zstd-compress the raw root filesystem; both hashes are taken on the way through.

    zstd's multi-threaded mode gives the same bytes for any worker count >= 1 (0, the
    single-threaded mode, gives other bytes), so at least one worker is always asked for."""
    total = raw.stat().st_size
    compressor = zstandard.ZstdCompressor(level=level, threads=max(1, os.cpu_count() or 1),
                                          write_checksum=True, write_content_size=True)
    report = (lambda done: progress("compress", done, total)) if progress else None
    with raw.open("rb") as source, out.open("wb") as target:
        reader, writer = _Hashing(source, report), _Hashing(target)
        # _Hashing has the read and write copy_stream calls, passed through to the files
        compressor.copy_stream(cast(IO[bytes], reader), cast(IO[bytes], writer), size=total,
                               read_size=CHUNK, write_size=CHUNK)
        target.flush()
        os.fsync(target.fileno())
    return Payload(writer.sha.hexdigest(), writer.size, reader.sha.hexdigest(), reader.size)


def tar_member(name: str, size: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.type = size, mtime, 0o644, tarfile.REGTYPE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_bundle(out: Path, manifest: bytes, signature: bytes, payloads: Mapping[str, Path],
                 mtime: int) -> None:
    """The tar itself, written beside ``out`` and renamed into place when complete."""
    scratch = out.with_name(f".{out.name}.tmp")
    try:
        with scratch.open("wb") as handle:
            with tarfile.open(fileobj=handle, mode="w", format=tarfile.GNU_FORMAT) as tar:
                tar.addfile(tar_member(MANIFEST, len(manifest), mtime), io.BytesIO(manifest))
                tar.addfile(tar_member(SIGNATURE, len(signature), mtime), io.BytesIO(signature))
                for name in sorted(payloads):
                    path = payloads[name]
                    with path.open("rb") as payload:
                        tar.addfile(tar_member(name, path.stat().st_size, mtime), payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(scratch, out)
    finally:
        scratch.unlink(missing_ok=True)


def _created() -> int:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    return int(epoch) if epoch else int(time.time())


def build_bundle(rootfs: Path, kernel: Path, initrd: Path, version: str,
                 key: Ed25519PrivateKey | Path, out: Path, *,
                 compatible: str = DEFAULT_COMPATIBLE, min_version: str = "0",
                 name: str = DEFAULT_NAME, created: int | None = None,
                 level: int = ZSTD_LEVEL, progress: Progress | None = None) -> Manifest:
    """Compress ``rootfs`` (a raw ext4 image), hash everything, sign the manifest, write
    ``out``. ``created`` defaults to ``SOURCE_DATE_EPOCH``, else now; the tar's mtimes are
    ``SOURCE_DATE_EPOCH`` when set, else ``created``."""
    parse_version(version, "version")
    parse_version(min_version, "min_version")
    private = key if isinstance(key, Ed25519PrivateKey) else signing.load_private_key(key)
    stamp = created if created is not None else _created()
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    mtime = int(epoch) if epoch else stamp
    out.parent.mkdir(parents=True, exist_ok=True)
    compressed = out.with_name(f".{out.name}.{ROOTFS}.tmp")
    try:
        payloads = {ROOTFS: compress_rootfs(rootfs, compressed, level, progress),
                    KERNEL: file_digest(kernel), INITRD: file_digest(initrd)}
        manifest = Manifest(name=name, version=version, compatible=compatible,
                            min_version=min_version, created=stamp, payloads=payloads)
        data = manifest.canonical()
        write_bundle(out, data, signing.sign(data, private),
                     {ROOTFS: compressed, KERNEL: kernel, INITRD: initrd}, mtime)
    finally:
        compressed.unlink(missing_ok=True)
    return manifest
