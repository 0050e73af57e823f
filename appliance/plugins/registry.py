"""The plugins a box holds, and what the operator allowed each of them.

Layout under the root (``plugins.dir``, default ``<data_dir>/plugins``)::

    installed/<name>/        the running version's files
    pending/<name>/          verified, waiting for the operator's approval
    data/<name>/             the plugin's own writable folder
    secrets/<name>/<KEY>     its secrets (0600)
    state.json               per plugin: version, enabled, signing key, approved capabilities

A plugin is verified in a scratch folder beside these before anything else is touched, so a
refused one leaves the root exactly as it was. Folders are swapped in by rename and
state.json is written last and atomically: a crash leaves the old plugin or the new one,
never a part, and the gateway notices a change with one stat of state.json (:meth:`stamp`).
Every load re-verifies the signature, so files changed on the box are not run.
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version
from pydantic import ValidationError

import appliance.skills
from appliance.config import Settings
from appliance.files import fsync_dir, write_atomic
from appliance.plugins.package import (
    ARCHIVE_SUFFIXES,
    SIGNATURE,
    PluginRefused,
    VerifiedPlugin,
    content,
    document,
    read_manifest,
    unpack,
    verify_plugin,
)
from appliance.security.files import SECRET_DIR_MODE, write_secret
from appliance.skills.manifest import Capabilities, PluginManifest, load_manifest
from appliance.update.errors import UpdateRefused
from appliance.update.signing import Keyring, load_keyring

log = logging.getLogger(__name__)

BUILTIN = Path(appliance.skills.__file__).parent / "builtin"
CHAT_CLASS = "chat"  # the intent model's class for plain chat (appliance.skills.intents.CHAT)
STATE = "state.json"
STATE_FORMAT = 1
INSTALLED, UPGRADED, PENDING, UNCHANGED = "installed", "upgraded", "pending", "unchanged"
_SECRET_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
_SCRATCH_PREFIXES = (".incoming-", ".old-")


def plugins_root(settings: Settings) -> Path:
    return settings.plugins.dir or settings.paths.data_dir / "plugins"


def plugin_keyring(settings: Settings) -> Keyring:
    """The keys this box trusts to sign plugins (``plugins.keyring_dir``), not the update's."""
    folder = settings.plugins.keyring_dir
    if not folder.is_dir():
        raise PluginRefused(f"no plugin keyring at {folder} (plugins.keyring_dir): this box "
                            "trusts no plugin signer; put the signer's .pub key there")
    try:
        return load_keyring(folder)
    except UpdateRefused as exc:
        raise PluginRefused(f"plugin keyring: {exc}") from None


def builtin_skill_names() -> set[str]:
    """Skill names a plugin may not take: the box's own, and the router's chat class."""
    return {s.name for s in load_manifest(BUILTIN).skills} | {CHAT_CLASS}


@dataclass(frozen=True)
class InstallOutcome:
    status: str  # installed, upgraded, pending, unchanged
    name: str
    version: str
    capabilities: list[str]  # everything it asks for (Capabilities.described)
    asks: list[str]  # what of that was not approved before


@dataclass(frozen=True)
class PendingRecord:
    version: str
    key_id: str
    asks: list[str]


@dataclass(frozen=True)
class PluginRecord:
    """One plugin in state.json; ``version`` is None while a new plugin awaits approval."""
    name: str
    version: str | None
    enabled: bool
    key_id: str | None
    approved: Capabilities | None
    installed_at: float | None
    pending: PendingRecord | None

    @property
    def installed(self) -> bool:
        return self.version is not None

    def to_json(self) -> dict[str, Any]:
        """As ``appliance plugins list --json`` and ``GET /v1/plugins`` show it."""
        return {"name": self.name, "version": self.version, "enabled": self.enabled,
                "key_id": self.key_id,
                "approved": self.approved.described() if self.approved else [],
                "installed_at": self.installed_at,
                "pending": None if self.pending is None else {
                    "version": self.pending.version, "key_id": self.pending.key_id,
                    "asks": self.pending.asks}}


@dataclass(frozen=True)
class ActivePlugin:
    """An installed, approved, enabled plugin whose files verified as it was loaded."""
    name: str
    version: str
    folder: Path
    manifest: PluginManifest
    granted: Capabilities
    data_dir: Path
    secrets_dir: Path


def _newer(new: str, old: str) -> bool | None:
    """True: an upgrade; False: a downgrade; None: the same version."""
    try:
        a, b = Version(new), Version(old)
    except InvalidVersion:  # a suffix PEP 440 does not know: order by the numbers only
        a_, b_ = (tuple(int(n) for n in v.split("-")[0].split(".")[:3]) for v in (new, old))
        if a_ == b_ and new != old:
            raise PluginRefused(f"cannot tell whether {new} is newer than {old}; bump the "
                                "version number") from None
        return None if a_ == b_ else a_ > b_
    return None if a == b else a > b


def _remove_tree(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


class PluginRegistry:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.state_path = root / STATE

    # -- folders -------------------------------------------------------------------------

    def installed_dir(self, name: str) -> Path:
        return self.root / "installed" / name

    def pending_dir(self, name: str) -> Path:
        return self.root / "pending" / name

    def data_dir(self, name: str) -> Path:
        return self.root / "data" / name

    def secrets_dir(self, name: str) -> Path:
        return self.root / "secrets" / name

    # -- state ---------------------------------------------------------------------------

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            doc = json.loads(self.state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise PluginRefused(f"{self.state_path}: unreadable ({exc})") from None
        plugins = doc.get("plugins") if isinstance(doc, dict) else None
        if not isinstance(plugins, dict):
            raise PluginRefused(f"{self.state_path}: not a plugin state file")
        return plugins

    def _write(self, plugins: dict[str, dict[str, Any]]) -> None:
        doc = {"format": STATE_FORMAT, "plugins": dict(sorted(plugins.items()))}
        write_atomic(self.state_path, json.dumps(doc, indent=2, sort_keys=True) + "\n",
                     mode=0o644)

    @staticmethod
    def _record(name: str, entry: dict[str, Any]) -> PluginRecord:
        try:
            approved = None if entry.get("approved") is None else \
                Capabilities.model_validate(entry["approved"])
        except ValidationError:
            approved = None
        pending = entry.get("pending")
        return PluginRecord(
            name=name, version=entry.get("version"), enabled=bool(entry.get("enabled")),
            key_id=entry.get("key_id"), approved=approved,
            installed_at=entry.get("installed_at"),
            pending=PendingRecord(pending["version"], pending["key_id"], list(pending["asks"]))
            if isinstance(pending, dict) else None)

    def _entry(self, plugins: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
        if name not in plugins:
            known = ", ".join(sorted(plugins)) or "none"
            raise PluginRefused(f"no plugin named {name} (installed: {known})")
        return plugins[name]

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One change at a time (the CLI over SSH, an Ansible run): a lock on the root
        folder itself, so taking it writes nothing."""
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _changing(self) -> Iterator[dict[str, dict[str, Any]]]:
        """The state to change; written back when the block ends without an error."""
        if not self.root.is_dir():  # nothing installed: the caller refuses the name
            yield {}
            return
        with self._locked():
            plugins = self._read()
            yield plugins
            self._write(plugins)

    # -- install -------------------------------------------------------------------------

    def install(self, source: Path, keyring: Keyring, approve: bool = False,
                reserved: set[str] | None = None) -> InstallOutcome:
        """Verify ``source`` (a folder or a ``.plugin.tar.gz``) and install it, or stage it
        for approval when it is new or asks for more than was approved."""
        created = [p for p in (self.root, *self.root.parents) if not p.exists()]
        self.root.mkdir(parents=True, exist_ok=True)
        scratch: Path | None = None
        try:
            with self._locked():
                scratch = Path(tempfile.mkdtemp(prefix=_SCRATCH_PREFIXES[0], dir=self.root))
                staged = self._stage(source, scratch / "plugin")
                verified = verify_plugin(staged, keyring)
                plugins = self._read()
                self._check_names(verified.manifest, plugins, reserved)
                outcome = self._decide(verified, staged, plugins, approve)
                if outcome.status != UNCHANGED:
                    self._write(plugins)
                self._sweep()
        except BaseException:
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
            for folder in created:  # deepest first: only what this call made, if empty
                with contextlib.suppress(OSError):
                    folder.rmdir()
            raise
        return outcome

    def _stage(self, source: Path, into: Path) -> Path:
        """A private copy of the plugin (what is verified is what is installed), without
        byte caches, files 0644 and folders 0755 so the confined plugin can read them."""
        if source.is_dir():
            into.mkdir()
            for relative, path in [*content(source), (SIGNATURE, source / SIGNATURE)]:
                if not path.is_file() or path.is_symlink():
                    continue  # no plugin.sig: verification names it
                target = into / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target, follow_symlinks=False)
        elif source.is_file() and source.name.endswith(ARCHIVE_SUFFIXES):
            unpack(source, into)
        else:
            raise PluginRefused(f"{source}: not a plugin folder nor a plugin archive "
                                f"({', '.join(ARCHIVE_SUFFIXES)})")
        for folder, dirs, files in os.walk(into):
            os.chmod(folder, 0o755)
            for name in dirs:
                os.chmod(os.path.join(folder, name), 0o755)
            for name in files:
                os.chmod(os.path.join(folder, name), 0o644)
        return into

    def _check_names(self, manifest: PluginManifest, plugins: dict[str, dict[str, Any]],
                     reserved: set[str] | None) -> None:
        name = manifest.plugin.name
        if name == load_manifest(BUILTIN).plugin.name:
            raise PluginRefused(f"plugin name {name} is the box's own; rename the plugin")
        taken = {skill: "the box's own skills" for skill in
                 (builtin_skill_names() if reserved is None else reserved)}
        for other in sorted(plugins):
            if other == name:
                continue
            for folder in (self.installed_dir(other), self.pending_dir(other)):
                with contextlib.suppress(PluginRefused):
                    for skill in read_manifest(folder).skills:
                        taken.setdefault(skill.name, f"plugin {other}")
        clashes = [f"{s.name} (taken by {taken[s.name]})" for s in manifest.skills
                   if s.name in taken]
        if clashes:
            raise PluginRefused(f"plugin {name}: skill names already in use: "
                                f"{', '.join(clashes)}; rename the skills")

    def _decide(self, verified: VerifiedPlugin, staged: Path,
                plugins: dict[str, dict[str, Any]], approve: bool) -> InstallOutcome:
        manifest = verified.manifest
        name, version = manifest.plugin.name, manifest.plugin.version
        asked = manifest.capabilities
        entry = plugins.get(name)
        digest = _digest(verified)
        if entry is not None and entry.get("version") is not None:
            current = entry["version"]
            newer = _newer(version, current)
            if newer is None:
                if entry.get("digest") != digest:
                    raise PluginRefused(f"{name} version {current} is installed with other "
                                        "content; bump the version")
                return InstallOutcome(UNCHANGED, name, version, asked.described(), [])
            if not newer:
                raise PluginRefused(f"{name} {current} is installed; {version} is older and "
                                    f"downgrades are refused (appliance plugins remove {name} "
                                    "first)")
            approved = Capabilities.model_validate(entry.get("approved") or {})
            asks = asked.beyond(approved)
            if asks and not approve:
                self._put(staged, self.pending_dir(name))
                entry["pending"] = {"version": version, "key_id": verified.key_id,
                                    "asks": asks, "digest": digest}
                return InstallOutcome(PENDING, name, version, asked.described(), asks)
            self._put(staged, self.installed_dir(name))
            _remove_tree(self.pending_dir(name))
            entry.update(version=version, key_id=verified.key_id, digest=digest,
                         installed_at=time.time(), pending=None,
                         approved=asked.model_dump(mode="json") if asks else entry["approved"])
            return InstallOutcome(UPGRADED, name, version, asked.described(), asks)
        asks = asked.beyond(Capabilities())
        if not approve:
            self._put(staged, self.pending_dir(name))
            plugins[name] = {"name": name, "version": None, "enabled": True, "key_id": None,
                             "approved": None, "installed_at": None, "digest": None,
                             "pending": {"version": version, "key_id": verified.key_id,
                                         "asks": asks, "digest": digest}}
            return InstallOutcome(PENDING, name, version, asked.described(), asks)
        self._put(staged, self.installed_dir(name))
        _remove_tree(self.pending_dir(name))
        self._ready_folders(name)
        plugins[name] = {"name": name, "version": version, "enabled": True,
                         "key_id": verified.key_id, "digest": digest,
                         "approved": asked.model_dump(mode="json"),
                         "installed_at": time.time(), "pending": None}
        return InstallOutcome(INSTALLED, name, version, asked.described(), asks)

    def _put(self, staged: Path, target: Path) -> None:
        """Rename ``staged`` to ``target``; an old ``target`` is moved aside first and
        deleted after, so ``target`` is always a whole plugin or absent."""
        target.parent.mkdir(parents=True, exist_ok=True)
        aside = None
        if target.exists():
            aside = Path(tempfile.mkdtemp(prefix=_SCRATCH_PREFIXES[1], dir=self.root))
            os.replace(target, aside / "plugin")
        os.replace(staged, target)
        fsync_dir(target.parent)
        if aside is not None:
            shutil.rmtree(aside)

    def _ready_folders(self, name: str) -> None:
        self.data_dir(name).mkdir(parents=True, exist_ok=True)
        secrets = self.root / "secrets"
        secrets.mkdir(exist_ok=True)
        os.chmod(secrets, SECRET_DIR_MODE)

    def _sweep(self) -> None:
        """This install's scratch folder, and any an interrupted one left behind: only the
        holder of the lock makes them."""
        for path in self.root.iterdir():
            if path.name.startswith(_SCRATCH_PREFIXES):
                shutil.rmtree(path, ignore_errors=True)

    # -- operator's verbs ----------------------------------------------------------------

    def approve(self, name: str, reserved: set[str] | None = None) -> InstallOutcome:
        """Run the pending version with everything it asks for."""
        with self._changing() as plugins:
            entry = self._entry(plugins, name)
            pending = entry.get("pending")
            if not pending:
                raise PluginRefused(f"{name}: nothing is waiting for approval")
            manifest = read_manifest(self.pending_dir(name))
            if manifest.plugin.version != pending["version"]:
                raise PluginRefused(f"{self.pending_dir(name)} is not the version waiting "
                                    f"({pending['version']}); install it again")
            self._check_names(manifest, plugins, reserved)
            status = UPGRADED if entry.get("version") else INSTALLED
            self._put(self.pending_dir(name), self.installed_dir(name))
            self._ready_folders(name)
            entry.update(version=pending["version"], key_id=pending["key_id"],
                         digest=pending.get("digest"), installed_at=time.time(),
                         approved=manifest.capabilities.model_dump(mode="json"), pending=None)
        return InstallOutcome(status, name, manifest.plugin.version,
                              manifest.capabilities.described(), list(pending["asks"]))

    def _set_enabled(self, name: str, enabled: bool) -> None:
        with self._changing() as plugins:
            entry = self._entry(plugins, name)
            if entry.get("version") is None:
                raise PluginRefused(f"{name} is not installed yet: approve it first "
                                    f"(appliance plugins approve {name})")
            entry["enabled"] = enabled

    def enable(self, name: str) -> None:
        self._set_enabled(name, True)

    def disable(self, name: str) -> None:
        """Keep it installed, with its data and secrets, but do not run it."""
        self._set_enabled(name, False)

    def remove(self, name: str) -> None:
        """The plugin, its pending version, its data and its secrets: all gone."""
        with self._changing() as plugins:
            self._entry(plugins, name)
            for folder in (self.installed_dir(name), self.pending_dir(name),
                           self.data_dir(name), self.secrets_dir(name)):
                _remove_tree(folder)
            del plugins[name]

    def list(self) -> list[PluginRecord]:
        return [self._record(name, entry) for name, entry in sorted(self._read().items())]

    def active(self, keyring: Keyring) -> builtins.list[ActivePlugin]:
        """The plugins to run: installed and enabled, each re-verified now; one whose files
        no longer verify, or that asks for more than was approved, is left out (logged)."""
        try:
            records = self.list()
        except PluginRefused as exc:
            log.warning("no plugins run: %s", exc)
            return []
        found = []
        for record in records:
            if not (record.installed and record.enabled):
                continue
            folder = self.installed_dir(record.name)
            try:
                verified = verify_plugin(folder, keyring)
                about = verified.manifest.plugin
                if (about.name, about.version) != (record.name, record.version):
                    raise PluginRefused(f"{folder} holds {about.name} {about.version}, not "
                                        f"{record.name} {record.version}")
                if verified.key_id != record.key_id:
                    raise PluginRefused(f"signed by key {verified.key_id}, installed with "
                                        f"key {record.key_id}")
                beyond = verified.manifest.capabilities.beyond(record.approved or
                                                              Capabilities())
                if beyond or record.approved is None:
                    raise PluginRefused(f"asks for more than was approved: "
                                        f"{', '.join(beyond) or 'no approval recorded'}")
            except PluginRefused as exc:
                log.warning("plugin %s not run: %s", record.name, exc)
                continue
            assert record.version is not None
            found.append(ActivePlugin(record.name, record.version, folder, verified.manifest,
                                      verified.manifest.capabilities,
                                      self.data_dir(record.name),
                                      self.secrets_dir(record.name)))
        return found

    # -- secrets -------------------------------------------------------------------------

    def _declared_secret(self, name: str, key: str) -> Path:
        entry = self._entry(self._read() if self.root.is_dir() else {}, name)
        declared: set[str] = set()
        for folder, present in ((self.installed_dir(name), entry.get("version")),
                                (self.pending_dir(name), entry.get("pending"))):
            if present:
                with contextlib.suppress(PluginRefused):
                    declared.update(read_manifest(folder).capabilities.secrets)
        if key not in declared:
            raise PluginRefused(f"plugin {name} declares no secret {key!r} "
                                f"(declared: {', '.join(sorted(declared)) or 'none'})")
        if not _SECRET_NAME.match(key):
            raise PluginRefused(f"secret name {key!r} cannot be a file name; the plugin must "
                                "use letters, digits, '_', '.', '-'")
        return self.secrets_dir(name) / key

    def set_secret(self, name: str, key: str, value: str) -> None:
        path = self._declared_secret(name, key)
        with self._locked():
            secrets = self.root / "secrets"
            secrets.mkdir(exist_ok=True)
            os.chmod(secrets, SECRET_DIR_MODE)
            write_secret(path, value.encode())

    def secret(self, name: str, key: str) -> str | None:
        path = self._declared_secret(name, key)
        try:
            return path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    def stamp(self) -> float:
        """state.json's mtime in nanoseconds (0: none), which every change rewrites."""
        try:
            return float(self.state_path.stat().st_mtime_ns)
        except FileNotFoundError:
            return 0.0


def _digest(verified: VerifiedPlugin) -> str:
    return hashlib.sha256(document(verified.manifest, verified.files)).hexdigest()
