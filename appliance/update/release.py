"""The running image's identity: ``/usr/lib/appliance/release.json`` inside each root slot.

Written by the image build (:func:`release_json`), read by the updater: ``version`` decides
upgrade or downgrade, ``compatible`` must equal the bundle's, so a bundle for other hardware
or another product is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from appliance.update.errors import UpdateRefused
from appliance.update.manifest import canonical_json, parse_version


@dataclass(frozen=True)
class Release:
    version: str
    compatible: str
    name: str = "edge-appliance"


def release_json(version: str, compatible: str, name: str = "edge-appliance") -> bytes:
    """The file's content, for the image build (canonical JSON and a newline)."""
    parse_version(version, "version")
    return canonical_json({"compatible": compatible, "name": name, "version": version}) + b"\n"


def read_release(path: Path) -> Release:
    try:
        value = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise UpdateRefused(f"no release file at {path}: not booted from an appliance "
                            "image") from None
    except (OSError, ValueError) as exc:
        raise UpdateRefused(f"{path}: unreadable release file ({exc})") from None
    if not isinstance(value, dict) or not all(
            isinstance(value.get(key), str) and value[key] for key in ("version", "compatible")):
        raise UpdateRefused(f"{path}: release file needs \"version\" and \"compatible\" strings")
    parse_version(value["version"], f"{path}: version")
    return Release(value["version"], value["compatible"], str(value.get("name", "edge-appliance")))
