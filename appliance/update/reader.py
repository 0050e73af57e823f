"""Read a bundle front to back, once, as a stream: the head first, then every payload hashed.

Members must come exactly as the builder writes them (manifest, signature, payloads in sorted
order, regular files only, nothing after): anything else, a short file or a wrong size or
hash is refused. Payload bytes go to optional sinks as they are read, so the install writes
while it checks; a sink's data counts only once the whole member has hashed right.
"""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from appliance.update.errors import UpdateRefused
from appliance.update.manifest import (
    MANIFEST,
    MAX_HEAD_BYTES,
    PAYLOADS,
    SIGNATURE,
    Manifest,
)

CHUNK = 1 << 20
Sink = Callable[[bytes], object]  # what a sink returns (a count of bytes written) is ignored
Progress = Callable[[str, int, int], None]


class BundleStream:
    """One pass over a bundle; use :func:`open_bundle`."""

    def __init__(self, path: Path, tar: tarfile.TarFile) -> None:
        self.path, self.tar = path, tar

    def _next(self, expected: str) -> tarfile.TarInfo:
        member = self.tar.next()
        if member is None:
            raise UpdateRefused(f"{self.path.name}: member {expected} is missing")
        if member.name != expected:
            raise UpdateRefused(f"{self.path.name}: found member {member.name!r} where "
                                f"{expected} belongs (unknown, repeated or out of order)")
        if not member.isreg():
            raise UpdateRefused(f"{self.path.name}: member {expected} is not a regular file")
        return member

    def _small(self, name: str) -> bytes:
        member = self._next(name)
        if member.size > MAX_HEAD_BYTES:
            raise UpdateRefused(f"{self.path.name}: {name} is {member.size} bytes; "
                                f"at most {MAX_HEAD_BYTES} expected")
        handle = self.tar.extractfile(member)
        assert handle is not None  # a regular file always has one
        data = handle.read()
        if len(data) != member.size:
            raise UpdateRefused(f"{self.path.name}: {name} is cut short")
        return data

    def head(self) -> tuple[bytes, bytes]:
        """The manifest's bytes and the signature document (neither checked yet)."""
        return self._small(MANIFEST), self._small(SIGNATURE)

    def payloads(self, manifest: Manifest, sinks: Mapping[str, Sink] | None = None,
                 progress: Progress | None = None, what: str = "verify") -> None:
        """Hash every payload against the manifest, feeding each chunk to its sink."""
        total = sum(p.size for p in manifest.payloads.values())
        done = 0
        for name in PAYLOADS:
            expected = manifest.payloads[name]
            member = self._next(name)
            if member.size != expected.size:
                raise UpdateRefused(f"{self.path.name}: {name} is {member.size} bytes, the "
                                    f"manifest says {expected.size}")
            handle = self.tar.extractfile(member)
            assert handle is not None
            sha, size, sink = hashlib.sha256(), 0, (sinks or {}).get(name)
            while chunk := handle.read(CHUNK):
                sha.update(chunk)
                size += len(chunk)
                if sink:
                    sink(chunk)
                done += len(chunk)
                if progress:
                    progress(what, done, total)
            if size != expected.size:
                raise UpdateRefused(f"{self.path.name}: {name} is cut short")
            if sha.hexdigest() != expected.sha256:
                raise UpdateRefused(f"{self.path.name}: {name} does not match its sha256 in "
                                    "the signed manifest (altered or damaged bundle)")
        extra = self.tar.next()
        if extra is not None:
            raise UpdateRefused(f"{self.path.name}: unexpected member {extra.name!r} after "
                                "the payloads")


@contextmanager
def open_bundle(path: Path) -> Iterator[BundleStream]:
    """A streaming pass; a short or damaged tar becomes UpdateRefused."""
    try:
        handle: BinaryIO = path.open("rb")
    except OSError as exc:
        raise UpdateRefused(f"cannot read bundle {path}: {exc.strerror}") from None
    try:
        with tarfile.open(fileobj=handle, mode="r|") as tar:
            yield BundleStream(path, tar)
    except (tarfile.TarError, EOFError) as exc:
        raise UpdateRefused(f"{path.name}: not a complete bundle ({exc}); the file is "
                            "truncated or damaged") from None
    finally:
        handle.close()
