"""Signed model packages: a whole model, or a binary delta against the model a box has.

A package is an uncompressed tar of ``model.json`` (the manifest), ``model.sig`` (an Ed25519
signature over the manifest's canonical JSON, the update bundles' scheme, checked against the
same keyring, ``update.keyring_dir``) and one payload:
- ``model.tar.zst``: the model folder as a reproducible tar (sorted, owner 0, mtime 0),
  zstd-compressed;
- ``model.delta.zst``: that tar as ``zstd --patch-from`` makes it against the base model's
  tar: a fine-tune or a re-export that changes part of the weights travels as the changed
  part. The box applies it with python-zstandard (the base's tar as a raw-content dictionary),
  so it needs no zstd command.

The manifest names the model id, the oldest appliance version that may install it, the
payload's sha256 and size, the sha256 of the resulting folder tar, and for a delta the base
model's id and folder-tar sha256. ``install`` checks, in order, the signature, the version,
the payload's hash, the base, and the result's hash, unpacks into a scratch folder and has the
engine's own pipeline load it before renaming it into place: any refusal changes nothing.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zstandard
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from packaging.version import InvalidVersion, Version

from appliance.models.inspect import IR_MODEL_FILE
from appliance.models.registry import is_valid_id
from appliance.update import signing
from appliance.update.bundle import ZSTD_LEVEL, tar_member
from appliance.update.errors import UpdateRefused
from appliance.update.manifest import canonical_json

FORMAT = 1
MANIFEST = "model.json"
SIGNATURE = "model.sig"
FULL = "model.tar.zst"
DELTA = "model.delta.zst"
MAX_HEAD_BYTES = 1 << 20
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_FIELDS = {"format", "kind", "id", "min_version", "created", "payload", "result", "base"}


class PackageRefused(ValueError):
    """The package cannot be installed; phrased for the operator. Nothing was changed."""


@dataclass(frozen=True)
class ModelManifest:
    id: str
    min_version: str
    created: int
    payload: str  # FULL or DELTA
    payload_sha256: str
    payload_size: int
    result_sha256: str  # of the model folder's tar
    base_id: str | None = None
    base_sha256: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "kind": "model", "id": self.id,
                "min_version": self.min_version, "created": self.created,
                "payload": {"name": self.payload, "sha256": self.payload_sha256,
                            "size": self.payload_size},
                "result": {"sha256": self.result_sha256},
                "base": None if self.base_id is None else
                {"id": self.base_id, "sha256": self.base_sha256}}


def folder_tar(folder: Path) -> bytes:
    """The model folder as a tar whose bytes depend only on its files' names and contents."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            with path.open("rb") as handle:
                tar.addfile(tar_member(path.relative_to(folder).as_posix(),
                                       path.stat().st_size, 0), handle)
    return buffer.getvalue()


def compress_full(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(data)


def compress_delta(data: bytes, base: bytes) -> bytes:
    """``zstd --patch-from``: python-zstandard has no reference prefix, and its dictionary
    path left a 1 % change to a 130 MB model at 109 MB against the CLI's 12 MB. The frame is
    an ordinary zstd frame: :func:`decompress` applies it with python-zstandard."""
    zstd = shutil.which("zstd")
    if zstd is None:
        raise PackageRefused("a delta package needs the zstd command (apt-get install zstd)")
    with tempfile.TemporaryDirectory(prefix="model-delta-") as scratch:
        base_path, new_path, out = (Path(scratch) / n for n in ("base.tar", "new.tar", "d.zst"))
        base_path.write_bytes(base)
        new_path.write_bytes(data)
        done = subprocess.run([zstd, "-q", "-f", f"-{ZSTD_LEVEL}", f"--patch-from={base_path}",
                               str(new_path), "-o", str(out)], capture_output=True, text=True)
        if done.returncode != 0:
            raise PackageRefused(f"zstd --patch-from failed: {done.stderr.strip()}")
        return out.read_bytes()


def decompress(payload: bytes, base: bytes | None, limit: int) -> bytes:
    """A full payload, or a delta applied to ``base`` (the same raw-content dictionary)."""
    if base is None:
        decompressor = zstandard.ZstdDecompressor(max_window_size=1 << 31)
    else:
        decompressor = zstandard.ZstdDecompressor(
            dict_data=zstandard.ZstdCompressionDict(
                base, dict_type=zstandard.DICT_TYPE_RAWCONTENT),
            max_window_size=1 << 31)
    return decompressor.decompress(payload, max_output_size=limit)


def build(folder: Path, model_id: str, key: Ed25519PrivateKey, out: Path,
          min_version: str, base: Path | None = None, base_id: str | None = None,
          delta: str = "auto") -> ModelManifest:
    """Write a package of ``folder`` as ``model_id``; with ``base`` (the folder of the model
    the boxes have), a delta when ``delta`` is "always", or "auto" and it is smaller."""
    if not is_valid_id(model_id):
        raise PackageRefused(f"{model_id!r} is not a valid model id")
    if not (folder / IR_MODEL_FILE).is_file():
        raise PackageRefused(f"{folder} is not an OpenVINO IR model folder")
    try:
        Version(min_version)
    except InvalidVersion:
        raise PackageRefused(f"--min-version {min_version!r} is not a PEP 440 version") from None
    data = folder_tar(folder)
    name, payload = FULL, compress_full(data)
    base_sha = None
    if base is not None and delta != "never":
        base_data = folder_tar(base)
        patch = compress_delta(data, base_data)
        if delta == "always" or len(patch) < len(payload):
            name, payload, base_sha = DELTA, patch, hashlib.sha256(base_data).hexdigest()
    manifest = ModelManifest(
        id=model_id, min_version=min_version, created=int(time.time()), payload=name,
        payload_sha256=hashlib.sha256(payload).hexdigest(), payload_size=len(payload),
        result_sha256=hashlib.sha256(data).hexdigest(),
        base_id=(base_id or (base.name if base is not None else None)) if base_sha else None,
        base_sha256=base_sha)
    head = canonical_json(manifest.to_json())
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for member, content in ((MANIFEST, head), (SIGNATURE, signing.sign(head, key)),
                                (name, payload)):
            tar.addfile(tar_member(member, len(content), manifest.created),
                        io.BytesIO(content))
    return manifest


def _sha(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _SHA256.match(value):
        raise PackageRefused(f"manifest: {what} must be 64 lower-case hex digits")
    return value


def parse(head: bytes) -> ModelManifest:
    try:
        value = json.loads(head)
        if not isinstance(value, dict) or value.get("format") != FORMAT or \
                value.get("kind") != "model" or set(value) != _FIELDS:
            raise ValueError("not a format-1 model manifest")
        payload, base = value["payload"], value["base"]
        manifest = ModelManifest(
            id=str(value["id"]), min_version=str(value["min_version"]),
            created=int(value["created"]), payload=str(payload["name"]),
            payload_sha256=_sha(payload["sha256"], "payload.sha256"),
            payload_size=int(payload["size"]),
            result_sha256=_sha(value["result"]["sha256"], "result.sha256"),
            base_id=None if base is None else str(base["id"]),
            base_sha256=None if base is None else _sha(base["sha256"], "base.sha256"))
        Version(manifest.min_version)
    except (ValueError, KeyError, TypeError, InvalidVersion) as exc:
        raise PackageRefused(f"model.json is not a model manifest ({exc})") from None
    if not is_valid_id(manifest.id):
        raise PackageRefused(f"manifest: {manifest.id!r} is not a valid model id")
    if manifest.payload not in (FULL, DELTA) or (manifest.payload == DELTA) != \
            (manifest.base_id is not None):
        raise PackageRefused("manifest: a delta names its base, a full model does not")
    return manifest


def _members(package: Path) -> dict[str, bytes]:
    try:
        with tarfile.open(package, mode="r:") as tar:
            members = {}
            for info in tar.getmembers():
                if not info.isfile() or info.name in members:
                    raise PackageRefused(f"{package}: unexpected member {info.name!r}")
                handle = tar.extractfile(info)
                if handle is None:
                    raise PackageRefused(f"{package}: unreadable member {info.name!r}")
                members[info.name] = handle.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise PackageRefused(f"{package} is not a readable package ({exc}); truncated?") from None
    return members


def install(package: Path, models_dir: Path, keyring_dir: Path, running_version: str,
            smoke_test: bool = True) -> ModelManifest:
    """Check and install a package into ``models_dir``; PackageRefused changes nothing."""
    members = _members(package)
    head, signature = members.get(MANIFEST), members.get(SIGNATURE)
    if head is None or signature is None or len(head) > MAX_HEAD_BYTES:
        raise PackageRefused(f"{package} has no {MANIFEST} and {SIGNATURE}: not a model package")
    try:
        signing.verify(head, signature, signing.load_keyring(keyring_dir))
    except UpdateRefused as exc:
        raise PackageRefused(str(exc).replace("manifest.sig", SIGNATURE)
                             .replace("bundle", "package")) from None
    manifest = parse(head)
    if Version(running_version) < Version(manifest.min_version):
        raise PackageRefused(f"{manifest.id} needs appliance {manifest.min_version} or newer; "
                             f"this box runs {running_version}")
    payload = members.get(manifest.payload)
    if payload is None:
        raise PackageRefused(f"{package} lacks its payload {manifest.payload}; truncated?")
    if len(payload) != manifest.payload_size or \
            hashlib.sha256(payload).hexdigest() != manifest.payload_sha256:
        raise PackageRefused(f"{manifest.payload}: its sha256 is not the signed one (altered "
                             "or damaged package)")
    base = None
    if manifest.base_id is not None:
        base_folder = models_dir / manifest.base_id
        if not (base_folder / IR_MODEL_FILE).is_file():
            raise PackageRefused(f"this delta applies to {manifest.base_id}, which this box does "
                                 "not have; install the full model")
        base = folder_tar(base_folder)
        if hashlib.sha256(base).hexdigest() != manifest.base_sha256:
            raise PackageRefused(f"this delta applies to another build of {manifest.base_id} "
                                 "than this box has (its sha256 differs); install the full "
                                 "model")
    try:
        data = decompress(payload, base, limit=64 << 30)
    except zstandard.ZstdError as exc:
        raise PackageRefused(f"{manifest.payload} does not decompress ({exc})") from None
    if hashlib.sha256(data).hexdigest() != manifest.result_sha256:
        raise PackageRefused(f"the unpacked {manifest.id} is not the signed model (its sha256 "
                             "differs)")
    scratch = models_dir / f".{manifest.id}.installing"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            tar.extractall(scratch, filter="data")  # no links, no paths outside the folder
        if smoke_test:
            from appliance.models.importer import ImportRefused, check_serves
            try:
                check_serves(scratch)
            except ImportRefused as exc:
                raise PackageRefused(str(exc)) from None
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    target = models_dir / manifest.id
    previous = models_dir / f".{manifest.id}.previous"
    shutil.rmtree(previous, ignore_errors=True)
    if target.exists():
        target.rename(previous)  # kept until the new one is in place, then removed
    scratch.rename(target)
    shutil.rmtree(previous, ignore_errors=True)
    return manifest
