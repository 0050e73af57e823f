"""A plugin as it travels: a folder (manifest, program, other files) and ``plugin.sig``.

The signature covers a document naming every file with its sha256, so a file changed, added
or removed after signing is refused, and the box never runs code its plugin keyring did not
vouch for. The scheme and keys are the update's (:mod:`appliance.update.signing`); the keyring
is a separate one. Byte caches (``__pycache__``, ``*.pyc``) are not content: the interpreter
writes them itself, so they are neither signed nor copied.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import json
import os
import stat
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance.files import fsync_dir, scratch_path, write_atomic
from appliance.skills.manifest import ManifestError, PluginManifest, load_manifest
from appliance.update import signing
from appliance.update.errors import UpdateRefused
from appliance.update.manifest import canonical_json

SIGNATURE = "plugin.sig"
FORMAT = 1
MAX_FILES = 500
MAX_BYTES = 50 * 1024 * 1024
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
_CHUNK = 1 << 20


class PluginRefused(Exception):
    """A plugin that must not be signed, packed, installed or run, said for the operator."""


@dataclass(frozen=True)
class VerifiedPlugin:
    manifest: PluginManifest
    key_id: str
    files: dict[str, str]  # relative posix path -> sha256 hex, the signed content


def is_cache(relative: PurePosixPath) -> bool:
    """Byte caches the interpreter writes: never signed, never copied."""
    return "__pycache__" in relative.parts or relative.suffix == ".pyc"


def content(folder: Path) -> list[tuple[str, Path]]:
    """Every file that is signed content (relative posix path, path), sorted; refuses what a
    plugin must not hold (links, devices, fifos, sockets) and more than the limits."""
    if not folder.is_dir():
        raise PluginRefused(f"{folder}: not a plugin folder")
    count = total = 0
    pending = [(folder, PurePosixPath())]
    found: list[tuple[str, Path]] = []
    while pending:
        here, relative_here = pending.pop()
        with os.scandir(here) as entries:
            for entry in entries:
                relative = relative_here / entry.name
                if is_cache(relative):
                    continue
                info = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(info.st_mode):
                    pending.append((Path(entry.path), relative))
                    continue
                if not stat.S_ISREG(info.st_mode):
                    kind = "a symbolic link" if stat.S_ISLNK(info.st_mode) else \
                        "not a regular file (device, fifo or socket)"
                    raise PluginRefused(f"{folder}: {relative} is {kind}; a plugin holds "
                                        "regular files and folders only")
                if relative == PurePosixPath(SIGNATURE):
                    continue
                count, total = count + 1, total + info.st_size
                if count > MAX_FILES:
                    raise PluginRefused(f"{folder}: more than {MAX_FILES} files")
                if total > MAX_BYTES:
                    raise PluginRefused(f"{folder}: more than {MAX_BYTES // (1 << 20)} MB")
                found.append((str(relative), Path(entry.path)))
    return sorted(found)


def digests(folder: Path) -> dict[str, str]:
    """The signed content's files and their sha256."""
    found = {}
    for relative, path in content(folder):
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
        found[relative] = digest.hexdigest()
    return found


def document(manifest: PluginManifest, files: dict[str, str]) -> bytes:
    return canonical_json({"kind": "plugin", "format": FORMAT, "name": manifest.plugin.name,
                           "version": manifest.plugin.version, "files": files})


def signed_document(folder: Path, manifest: PluginManifest) -> bytes:
    """The exact bytes ``plugin.sig`` signs: the plugin's name, version and every file."""
    return document(manifest, digests(folder))


def read_manifest(folder: Path) -> PluginManifest:
    try:
        return load_manifest(folder)
    except ManifestError as exc:
        raise PluginRefused(str(exc)) from None


def _with_entry(folder: Path, manifest: PluginManifest, files: dict[str, str]) -> None:
    if manifest.plugin.entry not in files:
        raise PluginRefused(f"{folder}: the plugin's program {manifest.plugin.entry} "
                            "(plugin.entry) is not there")


def sign_plugin(folder: Path, key: Ed25519PrivateKey) -> Path:
    """Write ``plugin.sig`` over the folder as it is now; sign last, after every change."""
    manifest = read_manifest(folder)
    files = digests(folder)
    _with_entry(folder, manifest, files)
    target = folder / SIGNATURE
    write_atomic(target, signing.sign(document(manifest, files), key), mode=0o644)
    return target


def _claimed_key(raw: bytes) -> tuple[str, str]:
    """(algorithm, key id) a signature document claims; PluginRefused when it is none."""
    try:
        doc = json.loads(raw)
        fields = doc["algorithm"], doc["key_id"], doc["signature"]
        if not all(isinstance(item, str) for item in fields):
            raise TypeError("fields must be strings")
        base64.b64decode(fields[2], validate=True)
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, binascii.Error):
        raise PluginRefused(f"{SIGNATURE} is not a signature document") from None
    return fields[0], fields[1]


def verify_plugin(folder: Path, keyring: signing.Keyring) -> VerifiedPlugin:
    """The plugin in ``folder`` if a key of ``keyring`` signed exactly these files."""
    manifest = read_manifest(folder)
    signature = folder / SIGNATURE
    if signature.is_symlink() or not signature.is_file():
        raise PluginRefused(f"unsigned plugin: no {SIGNATURE} in {folder}")
    files = digests(folder)
    _with_entry(folder, manifest, files)
    raw = signature.read_bytes()
    algorithm, claimed = _claimed_key(raw)
    if algorithm != signing.ALGORITHM:
        raise PluginRefused(f"signature algorithm {algorithm!r} is not accepted "
                            f"(only {signing.ALGORITHM})")
    if claimed not in keyring:
        raise PluginRefused(f"plugin signed by key {claimed}, which is not in this box's "
                            f"plugin keyring (trusted: {', '.join(sorted(keyring))})")
    try:
        kid = signing.verify(document(manifest, files), raw, keyring)
    except UpdateRefused:
        raise PluginRefused(f"bad signature: files of {manifest.plugin.name} "
                            f"{manifest.plugin.version} were changed, added or removed after "
                            f"signing (or key {claimed} did not sign them)") from None
    return VerifiedPlugin(manifest, kid, files)


def archive_name(manifest: PluginManifest) -> str:
    return f"{manifest.plugin.name}-{manifest.plugin.version}.plugin.tar.gz"


def pack(folder: Path, out_dir: Path) -> Path:
    """``NAME-VERSION.plugin.tar.gz`` of a signed folder: its files at the top, no owners,
    no times, so the same folder always packs to the same bytes."""
    manifest = read_manifest(folder)
    if not (folder / SIGNATURE).is_file() or (folder / SIGNATURE).is_symlink():
        raise PluginRefused(f"unsigned plugin: no {SIGNATURE} in {folder}; sign it first")
    members = [*content(folder), (SIGNATURE, folder / SIGNATURE)]
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / archive_name(manifest)
    scratch = scratch_path(target)
    try:
        with scratch.open("wb") as raw:
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as zipped, \
                    tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for relative, path in sorted(members):
                    info = tar.gettarinfo(str(path), arcname=relative)
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    info.mtime = 0
                    info.mode = 0o644
                    with path.open("rb") as handle:
                        tar.addfile(info, handle)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(scratch, target)
    except BaseException:
        scratch.unlink(missing_ok=True)
        raise
    fsync_dir(out_dir)
    return target


def _member_problem(member: tarfile.TarInfo) -> str | None:
    name = PurePosixPath(member.name)
    if name.is_absolute() or ".." in name.parts:
        return f"{member.name} points outside the plugin's folder"
    if member.issym() or member.islnk():
        return f"{member.name} is a link"
    if not (member.isfile() or member.isdir()):
        return f"{member.name} is not a regular file or folder (device or fifo)"
    return None


def _extract_file(tar: tarfile.TarFile, member: tarfile.TarInfo, into: Path) -> None:
    """One checked regular file, written as a plain 0644 file whatever the archive says of
    its owner and mode."""
    source = tar.extractfile(member)
    if source is None:
        raise PluginRefused(f"{member.name} has no content")
    target = into.joinpath(*PurePosixPath(member.name).parts)
    target.parent.mkdir(parents=True, exist_ok=True)
    with source, target.open("xb") as out:
        while chunk := source.read(_CHUNK):
            out.write(chunk)
    target.chmod(0o644)


def unpack(archive: Path, into: Path) -> None:
    """Extract a plugin archive into the (new or empty) folder ``into``; links, devices,
    paths leaving the folder and more than the size limit are refused before any file is
    written."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            members, files, total = [], 0, 0
            for member in tar:
                problem = _member_problem(member)
                if problem:
                    raise PluginRefused(f"{archive}: {problem}")
                if member.isdir() or is_cache(PurePosixPath(member.name)):
                    continue
                files, total = files + 1, total + member.size
                if files > MAX_FILES + 1:  # the signature besides the content
                    raise PluginRefused(f"{archive}: more than {MAX_FILES} files")
                if total > MAX_BYTES:
                    raise PluginRefused(f"{archive}: more than {MAX_BYTES // (1 << 20)} MB")
                members.append(member)
            into.mkdir(parents=True, exist_ok=True)
            for member in members:  # by hand: Debian 12's Python 3.11.2 has no tarfile filter
                _extract_file(tar, member, into)
    except PluginRefused:
        raise
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise PluginRefused(f"{archive}: not a readable plugin archive ({exc})") from None
