"""What an image is made of, read from image/image.toml, plus where this build writes.

Everything that can change the image's bytes is an input here, in packages.lock or in
constraints.txt; the build adds nothing random, and the time it stamps is the commit's.
"""

from __future__ import annotations

import os
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

REPO = Path(__file__).resolve().parent.parent
IMAGE_DIR = REPO / "image"
SPEC_FILE = IMAGE_DIR / "image.toml"
LOCK_FILE = IMAGE_DIR / "packages.lock"
OVERLAY_DIR = IMAGE_DIR / "overlay"
UNITS_DIR = IMAGE_DIR / "systemd"
KEYRING_DIR = IMAGE_DIR / "keyring"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DiskSpec(_Strict):
    esp_mib: int = Field(ge=64)
    slot_mib: int = Field(ge=512)
    rootfs_mib: int = Field(ge=256)
    data_mib: int = Field(ge=64)


class IdSpec(_Strict):
    disk: str
    esp_part: str
    root_a_part: str
    root_b_part: str
    data_part: str
    rootfs_uuid: str
    data_uuid: str
    hash_seed: str
    esp_volume_id: str


class ImageSpec(_Strict):
    suite: str
    mirrors: list[str]
    packages: list[str]
    hostname: str
    compatible: str
    appliance_uid: int
    disk: DiskSpec
    ids: IdSpec


class SpecError(Exception):
    pass


def load_spec(path: Path = SPEC_FILE) -> ImageSpec:
    spec = ImageSpec.model_validate(tomllib.loads(path.read_text()))
    if spec.disk.rootfs_mib > spec.disk.slot_mib:
        raise SpecError(f"disk.rootfs_mib ({spec.disk.rootfs_mib}) is larger than a slot "
                        f"({spec.disk.slot_mib} MiB)")
    return spec


def project_version() -> str:
    with (REPO / "pyproject.toml").open("rb") as fh:
        return str(tomllib.load(fh)["project"]["version"])


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, check=True, capture_output=True,
                          text=True).stdout.strip()


@dataclass(frozen=True)
class BuildInputs:
    """The values a build stamps into the image besides the files: one per build."""

    version: str
    commit: str
    epoch: int
    out_dir: Path
    signing_key: Path
    deb_cache: Path
    offline: bool  # IMAGE_OFFLINE=1: the package cache is the only source (a lock it holds)

    @classmethod
    def from_env(cls, out_dir: Path | None = None) -> BuildInputs:
        epoch = os.environ.get("SOURCE_DATE_EPOCH") or git("log", "-1", "--format=%ct")
        return cls(
            version=os.environ.get("IMAGE_VERSION") or project_version(),
            commit=git("rev-parse", "HEAD"),
            epoch=int(epoch),
            out_dir=(out_dir or Path(os.environ.get("IMAGE_OUT", REPO / "build" / "image"))),
            signing_key=Path(os.environ.get("IMAGE_SIGNING_KEY",
                                            REPO / "build" / "keys" / "bundle-signing.key")),
            deb_cache=Path(os.environ.get("IMAGE_DEB_CACHE", REPO / "build" / "debs")).resolve(),
            offline=os.environ.get("IMAGE_OFFLINE", "") not in ("", "0"),
        )


STATE_ENV = "IMAGE_BUILD_STATE"


class BuildState(_Strict):
    """What the customize hook needs from the build; handed over as a JSON file."""

    version: str
    commit: str
    epoch: int
    compatible: str
    hostname: str
    appliance_uid: int
    wheelhouse: str
    esp_dir: str
    keyring: list[str]
    packages_out: str
    apt_sources: list[str]  # the image's own /etc/apt/sources.list (no build-host cache)
    debs_out: str           # where the hook leaves the downloaded .debs for the cache

    def save(self, path: Path) -> None:
        path.write_text(self.model_dump_json(indent=2))


def load_state() -> BuildState:
    return BuildState.model_validate_json(Path(os.environ[STATE_ENV]).read_text())
