#!/usr/bin/python
# Copyright: the edge-appliance authors. Apache-2.0.
"""Ansible module: appliance releases side by side on a plain Debian host, and which is current.

A plain host (no A/B slots) keeps each version in its own directory under
``<prefix>/releases/<version>`` with its own virtualenv, and points ``<prefix>/current`` at
the one that runs; ``<prefix>/previous`` remembers the one before, which is what a rollback
goes back to. Switching is one atomic rename of a symlink. The module uses only the standard
library and the host's Python, because the first release has to be installed before any
appliance code is on the host.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
---
module: appliance_release
short_description: Install appliance release bundles into release directories and switch them
description:
  - C(state=present) installs a release bundle (from C(appliance update release-bundle)) into
    C(<prefix>/releases/<version>) - a virtualenv built from the bundle's wheels with no
    package index - after checking every file's sha256 against the bundle's manifest.
  - When O(verify_with) names an existing C(appliance) executable (the running release), the
    bundle's Ed25519 signature is checked with it against O(keyring) before anything is
    written. The first release on a host is checked by the controller instead
    (C(appliance update release-verify) in the playbook).
  - C(state=current) points C(<prefix>/current) at an installed version and C(<prefix>/previous)
    at the one it replaces. C(state=absent) removes a release that is neither.
  - Idempotent; check mode reports what would change.
version_added: "0.1.0"
author:
  - Edge appliance maintainers
options:
  prefix:
    description: Folder holding C(releases/), C(current) and C(previous).
    type: path
    default: /opt/appliance
  state:
    description: C(present) installs, C(current) switches, C(absent) removes.
    type: str
    choices: [present, current, absent]
    default: present
  bundle:
    description: Release bundle on the host; required with C(state=present).
    type: path
  version:
    description: Release to switch to or remove; with C(present), checked against the bundle.
    type: str
  python:
    description: Interpreter the release's virtualenv is made with.
    type: path
    default: /usr/bin/python3
  verify_with:
    description: An C(appliance) executable that checks the bundle's signature, if it exists.
    type: path
  keyring:
    description: Folder of trusted C(.pub) keys, for O(verify_with).
    type: path
"""

EXAMPLES = r"""
- name: Install the release
  appliance_release:
    bundle: /var/lib/appliance/incoming/appliance-0.1.1.release
    verify_with: /opt/appliance/current/venv/bin/appliance
    keyring: /etc/appliance/keyring

- name: Make it current
  appliance_release:
    state: current
    version: "0.1.1"
"""

RETURN = r"""
version:
  description: The release acted on.
  returned: always
  type: str
current:
  description: The current release after the task (empty when none).
  returned: always
  type: str
previous:
  description: The release C(previous) points at after the task (empty when none).
  returned: always
  type: str
"""

MARKER = ".installed"


class ReleaseError(Exception):
    """A refusal, reported by fail_json. The running release is never touched; a release
    folder that failed half-way is rebuilt from scratch by the next attempt."""


def link_target(link: Path) -> str:
    """The version a ``current``/``previous`` link names, or '' when there is none."""
    try:
        return Path(os.readlink(link)).name
    except OSError:
        return ""


def relink(link: Path, version: str) -> None:
    scratch = link.with_name(f".{link.name}.tmp")
    scratch.unlink(missing_ok=True)
    os.symlink(Path("releases") / version, scratch)
    os.replace(scratch, link)


def read_manifest(bundle: Path) -> tuple[dict, tarfile.TarFile]:
    try:
        tar = tarfile.open(bundle, mode="r:")  # noqa: SIM115 (returned; the caller closes it)
    except (OSError, tarfile.TarError) as exc:
        raise ReleaseError(f"{bundle}: not a release bundle ({exc})") from None
    member = tar.next()
    if member is None or member.name != "manifest.json" or not member.isfile():
        tar.close()
        raise ReleaseError(f"{bundle}: manifest.json does not come first")
    handle = tar.extractfile(member)
    try:
        manifest = json.loads(handle.read() if handle else b"")
    except ValueError:
        tar.close()
        raise ReleaseError(f"{bundle}: manifest.json is not JSON") from None
    if not isinstance(manifest, dict) or manifest.get("kind") != "release":
        tar.close()
        raise ReleaseError(f"{bundle}: not a release bundle")
    return manifest, tar


def safe_member_name(name: str) -> bool:
    """``constraints.txt`` or ``wheels/<file>.whl``: nothing that could leave the folder."""
    if name == "constraints.txt":
        return True
    folder, _, rest = name.partition("/")
    return folder == "wheels" and rest.endswith(".whl") and "/" not in rest \
        and rest not in ("", ".", "..") and not rest.startswith(".")


def extract_checked(tar: tarfile.TarFile, manifest: dict, into: Path) -> None:
    """Every payload, each hashed on the way out and refused when it differs."""
    payloads: dict = manifest["payloads"]
    bad = [name for name in payloads if not safe_member_name(name)]
    if bad:
        raise ReleaseError(f"unexpected member names in the manifest: {bad[:3]}")
    seen = set()
    heads = 0
    for member in tar:
        if member.name in ("manifest.json", "manifest.sig"):
            heads += 1
            if heads > 2:
                raise ReleaseError(f"{member.name} appears twice in the bundle")
            continue
        entry = payloads.get(member.name)
        if entry is None or not member.isfile() or member.name in seen:
            raise ReleaseError(f"unexpected member {member.name!r} in the bundle")
        seen.add(member.name)
        target = into / member.name
        target.parent.mkdir(parents=True, exist_ok=True)
        source = tar.extractfile(member)
        sha = hashlib.sha256()
        with target.open("wb") as out:
            while chunk := source.read(1 << 20):
                sha.update(chunk)
                out.write(chunk)
        if sha.hexdigest() != entry["sha256"]:
            raise ReleaseError(f"{member.name}: bytes differ from the manifest")
    missing = sorted(set(payloads) - seen)
    if missing:
        raise ReleaseError(f"bundle lacks {', '.join(missing)}")


def run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ReleaseError(f"{' '.join(command)} failed: {(done.stderr or done.stdout)[-2000:]}")


def install(params: dict, prefix: Path, check: bool) -> dict:
    bundle = Path(params["bundle"] or "")
    if not params["bundle"] or not bundle.is_file():
        raise ReleaseError(f"bundle {params['bundle']!r}: no such file on the host")
    manifest, tar = read_manifest(bundle)
    with tar:
        version = str(manifest["version"])
        if params["version"] and params["version"] != version:
            raise ReleaseError(f"bundle holds {version}, not {params['version']}")
        target = prefix / "releases" / version
        if (target / MARKER).is_file():
            return {"changed": False, "version": version}
        if check:
            return {"changed": True, "version": version}
        verifier = params["verify_with"]
        if verifier and not Path(verifier).is_file() and (prefix / "current").exists():
            raise ReleaseError(f"{verifier} is missing, so the bundle's signature cannot be "
                               "checked on the host")
        if verifier and Path(verifier).is_file():
            command = [verifier, "update", "release-verify", str(bundle)]
            if params["keyring"]:
                command += ["--keyring", params["keyring"]]
            running = link_target(prefix / "current")
            run([*command, "--running", running] if running else command)
        shutil.rmtree(target, ignore_errors=True)  # a half-built earlier attempt
        target.mkdir(parents=True)
        extract_checked(tar, manifest, target)
    wheels, constraints = target / "wheels", target / "constraints.txt"
    run([params["python"], "-m", "venv", str(target / "venv")])
    pip = [str(target / "venv" / "bin" / "python"), "-m", "pip", "install", "-q",
           "--disable-pip-version-check", "--no-index", "--find-links", str(wheels)]
    run([*pip, "--constraint", str(constraints), f"{manifest['install']}=={version}"])
    for name in manifest.get("no_deps", []):
        run([*pip, "--no-deps", name])
    shutil.rmtree(wheels)
    digest = hashlib.sha256()
    with bundle.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    (target / "release.json").write_text(json.dumps(
        {"version": version, "installed": int(time.time()),
         "bundle_sha256": digest.hexdigest()}, sort_keys=True) + "\n")
    (target / MARKER).touch()
    return {"changed": True, "version": version}


def make_current(params: dict, prefix: Path, check: bool) -> dict:
    version = params["version"]
    if not version:
        raise ReleaseError("state=current needs version")
    if not (prefix / "releases" / version / MARKER).is_file():
        raise ReleaseError(f"release {version} is not installed under {prefix}/releases")
    current = link_target(prefix / "current")
    if current == version:
        return {"changed": False, "version": version}
    if not check:
        if current:
            relink(prefix / "previous", current)
        relink(prefix / "current", version)
    return {"changed": True, "version": version, "diff": {
        "before": f"current: {current or '(none)'}\n", "after": f"current: {version}\n"}}


def remove(params: dict, prefix: Path, check: bool) -> dict:
    version = params["version"]
    if not version:
        raise ReleaseError("state=absent needs version")
    if version in (link_target(prefix / "current"), link_target(prefix / "previous")):
        raise ReleaseError(f"release {version} is current or previous; switch away first")
    target = prefix / "releases" / version
    if not target.exists():
        return {"changed": False, "version": version}
    if not check:
        shutil.rmtree(target)
    return {"changed": True, "version": version}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "prefix": {"type": "path", "default": "/opt/appliance"},
            "state": {"type": "str", "default": "present",
                      "choices": ["present", "current", "absent"]},
            "bundle": {"type": "path"},
            "version": {"type": "str"},
            "python": {"type": "path", "default": "/usr/bin/python3"},
            "verify_with": {"type": "path"},
            "keyring": {"type": "path"},
        },
        supports_check_mode=True,
    )
    prefix = Path(module.params["prefix"])
    action = {"present": install, "current": make_current, "absent": remove}
    try:
        result = action[module.params["state"]](module.params, prefix, module.check_mode)
    except (ReleaseError, OSError, KeyError) as exc:
        module.fail_json(msg=str(exc), changed=False)
    result["current"] = link_target(prefix / "current")
    result["previous"] = link_target(prefix / "previous")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
