"""What the package sources offer today: apt's own resolution, run on the build host in a
scratch directory (nothing of the host's apt is read or changed).

The build asks it before mmdebstrap starts which locked versions the sources (the package
cache first, then the Debian mirror) no longer have, and where each package's newest version
comes from, so a moved package can be named and a security update marked.
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


@dataclass(frozen=True)
class Offer:
    version: str
    origin: str  # the source line apt names: URL, suite/component, arch

    @property
    def security(self) -> bool:
        return "-security " in self.origin or "/debian-security" in self.origin


@dataclass(frozen=True)
class Missing:
    """A locked package whose version no source has any more."""

    name: str
    locked: str
    newest: Offer | None

    def describe(self) -> str:
        now = (f"the sources have {self.newest.version}"
               f"{' (security update)' if self.newest.security else ''}"
               if self.newest else "no source has it at all")
        return f"{self.name}={self.locked} is gone: {now}"


def with_keyring(line: str) -> str:
    """A bare ``deb URL ...`` line gets Debian's archive keyring (the host's copy)."""
    kind, _, rest = line.partition(" ")
    if rest.startswith("["):
        return line
    return f"{kind} [signed-by={KEYRING}] {rest}"


def best_offer(offers: list[Offer], version: str) -> Offer | None:
    """The offer of this version to report: a security archive's when one has it (the cache
    holds the same file, but only the archive says why it was published)."""
    same = [o for o in offers if o.version == version]
    return next((o for o in same if o.security), same[0] if same else None)


class MirrorIndex:
    def __init__(self, sources: list[str], arch: str = "amd64") -> None:
        self.sources = sources
        self.arch = arch
        self._tmp = tempfile.TemporaryDirectory(prefix="image-apt-")
        self.root = Path(self._tmp.name)

    def _options(self) -> list[str]:
        r = self.root
        return ["-o", f"Dir={r}", "-o", f"Dir::State::Status={r}/var/lib/dpkg/status",
                "-o", f"Dir::Etc::TrustedParts={r}/etc/apt/trusted.gpg.d",
                "-o", f"APT::Architecture={self.arch}", "-o", "Debug::NoLocking=1",
                "-o", "Acquire::Retries=3", "-o", "Acquire::Languages=none"]

    def update(self) -> MirrorIndex:
        for sub in ("etc/apt/apt.conf.d", "etc/apt/preferences.d", "etc/apt/trusted.gpg.d",
                    "var/lib/apt/lists/partial", "var/cache/apt/archives/partial",
                    "var/lib/dpkg"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "var/lib/dpkg/status").touch()
        lines = [with_keyring(s) for s in self.sources]
        (self.root / "etc/apt/sources.list").write_text("\n".join(lines) + "\n")
        done = subprocess.run(["apt-get", "-q", *self._options(), "update"],
                              capture_output=True, text=True)
        if done.returncode != 0 or "\nE: " in "\n" + done.stdout + done.stderr:
            raise RuntimeError("apt could not read the package sources:\n"
                               + (done.stderr or done.stdout)[-2000:])
        return self

    def offers(self, names: list[str]) -> dict[str, list[Offer]]:
        """Every version each package has in the sources, newest first."""
        found: dict[str, list[Offer]] = {name: [] for name in names}
        for start in range(0, len(names), 200):
            out = subprocess.run(["apt-cache", *self._options(), "madison",
                                  *names[start:start + 200]],
                                 capture_output=True, text=True, check=True).stdout
            for line in out.splitlines():
                parts = [p.strip() for p in line.split("|")]
                if len(parts) == 3 and parts[0] in found:
                    found[parts[0]].append(Offer(parts[1], parts[2]))
        return found

    def missing(self, lock: list[str]) -> list[Missing]:
        pins = dict(line.split("=", 1) for line in lock)
        offers = self.offers(sorted(pins))
        gone = []
        for name, version in sorted(pins.items()):
            have = offers.get(name, [])
            if not any(o.version == version for o in have):
                gone.append(Missing(name, version, best_offer(have, have[0].version)
                                    if have else None))
        return gone

    def close(self) -> None:
        self._tmp.cleanup()

    def __enter__(self) -> MirrorIndex:
        return self.update()

    def __exit__(self, *exc: object) -> None:
        self.close()
