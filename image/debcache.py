"""The package cache: every .deb a build installed, kept by its SHA-256, served as a local
apt repository that the next build reads before the Debian mirror.

Debian's mirror keeps only the newest version of each package, so a lock is buildable only
while the mirror still has it. A machine that built a lock once keeps its .debs here and can
rebuild it bit for bit after the mirror has moved on (mkosi's package cache, Yocto's download
mirror). The repository is flat (``deb [trusted=yes] copy:///<cache> ./``): its ``Packages``
index is written from the cached files, whose hashes apt checks as for any mirror.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

# The control fields apt needs to resolve and install a package, in Debian's order.
CONTROL_FIELDS = ("Package", "Source", "Version", "Architecture", "Essential", "Priority",
                  "Section", "Maintainer", "Installed-Size", "Provides", "Pre-Depends",
                  "Depends", "Recommends", "Suggests", "Conflicts", "Breaks", "Replaces",
                  "Multi-Arch", "Protected", "Description")


@dataclass(frozen=True)
class CachedDeb:
    name: str
    version: str
    arch: str
    sha256: str
    size: int

    @property
    def key(self) -> str:
        return f"{self.name}={self.version}:{self.arch}"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(4 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def read_control(deb: Path) -> dict[str, str]:
    """The package's control fields, as dpkg-deb reads them from the archive."""
    text = subprocess.run(["dpkg-deb", "--field", str(deb)], check=True, capture_output=True,
                          text=True).stdout
    fields: dict[str, str] = {}
    current = ""
    for line in text.splitlines():
        if line.startswith((" ", "\t")) and current:
            fields[current] += "\n" + line
        elif ":" in line:
            current, _, value = line.partition(":")
            fields[current] = value.strip()
    return fields


class DebCache:
    """``<dir>/sha256/<hex>.deb`` for the files, ``index.json`` for what they are, and the
    ``Packages`` file apt reads, rewritten whenever a package is added."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.blobs = directory / "sha256"
        self.index_file = directory / "index.json"

    def open(self) -> DebCache:
        self.blobs.mkdir(parents=True, exist_ok=True)
        if not (self.dir / "Packages").is_file():
            self.write_packages()
        return self

    @property
    def source(self) -> str:
        """The apt source line; copy:// because apt installs from inside the chroot."""
        return f"deb [trusted=yes] copy://{self.dir} ./"

    def entries(self) -> dict[str, dict[str, object]]:
        if not self.index_file.is_file():
            return {}
        return dict(json.loads(self.index_file.read_text()))

    def packages(self) -> list[CachedDeb]:
        return [CachedDeb(str(e["name"]), str(e["version"]), str(e["arch"]), str(e["sha256"]),
                          int(e["size"]))  # type: ignore[call-overload]
                for e in self.entries().values()]

    def find(self, name: str, version: str) -> CachedDeb | None:
        for deb in self.packages():
            if deb.name == name and deb.version == version:
                return deb
        return None

    def add(self, debs: list[Path]) -> int:
        """Take these .deb files in (copies, by content); the number that were new."""
        entries = self.entries()
        added = 0
        for deb in sorted(debs):
            digest = file_sha256(deb)
            blob = self.blobs / f"{digest}.deb"
            control = read_control(deb)
            entry = CachedDeb(control["Package"], control["Version"], control["Architecture"],
                              digest, deb.stat().st_size)
            if entry.key in entries and entries[entry.key]["sha256"] == digest:
                continue
            if not blob.exists():
                partial = blob.with_suffix(".partial")
                shutil.copyfile(deb, partial)
                partial.rename(blob)
            entries[entry.key] = {**entry.__dict__, "control": {
                k: control[k] for k in CONTROL_FIELDS if k in control}}
            added += 1
        if added:
            partial = self.index_file.with_suffix(".partial")
            partial.write_text(json.dumps(entries, indent=1, sort_keys=True) + "\n")
            partial.rename(self.index_file)
            self.write_packages()
        return added

    def write_packages(self) -> None:
        stanzas = []
        for _key, entry in sorted(self.entries().items()):
            control: dict[str, str] = entry["control"]  # type: ignore[assignment]
            lines = [f"{k}: {v}" for k, v in control.items() if k != "Description"]
            lines += [f"Filename: sha256/{entry['sha256']}.deb", f"Size: {entry['size']}",
                      f"SHA256: {entry['sha256']}"]
            if "Description" in control:
                lines.append(f"Description: {control['Description']}")
            stanzas.append("\n".join(lines) + "\n")
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "Packages").write_text("\n".join(stanzas))
