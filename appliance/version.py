"""The version this box runs, read in one low place (the gateway's /readyz, the ops daemon's
benchmark records, the CLI): the image's release file when booted from an image (a slot is
one release, whatever its packages say), else the installed package's."""

from __future__ import annotations

import json
from pathlib import Path

from appliance import __version__


def running_version(release_file: Path) -> str:
    try:
        version = json.loads(release_file.read_bytes()).get("version")
    except (OSError, ValueError, AttributeError):
        return __version__
    return version if isinstance(version, str) and version else __version__
