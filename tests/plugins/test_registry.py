"""What an operator's install, approval and removal do to a box's plugins: a refused plugin
changes nothing, a new one or one asking for more waits for approval, and only files that
still verify are run."""

from __future__ import annotations

import json
import logging
import os
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from appliance.plugins.package import PluginRefused, pack, sign_plugin
from appliance.plugins.registry import PluginRegistry, builtin_skill_names
from appliance.update import signing
from tests.plugins.conftest import Signer, signed_plugin, write_plugin


@pytest.fixture
def registry(tmp_path: Path) -> PluginRegistry:
    return PluginRegistry(tmp_path / "box" / "plugins")


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its bytes (None for a folder)."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): None if p.is_dir() else p.read_bytes()
            for p in sorted(root.rglob("*"))}


def installed(registry: PluginRegistry, plugin: Path, signer: Signer) -> PluginRegistry:
    registry.install(plugin, signer.keyring, approve=True)
    return registry


def test_an_approved_signed_plugin_is_installed_and_runs(
        registry: PluginRegistry, plugin: Path, signer: Signer) -> None:
    outcome = registry.install(plugin, signer.keyring, approve=True)
    assert (outcome.status, outcome.name, outcome.version) == ("installed", "weather", "1.0.0")
    assert outcome.capabilities == ["network host api.weather.example", "secret API_KEY"]
    [active] = registry.active(signer.keyring)
    assert active.folder == registry.root / "installed" / "weather"
    assert active.granted.network == ("api.weather.example",)
    assert active.data_dir.is_dir()
    assert active.secrets_dir == registry.root / "secrets" / "weather"


def test_the_state_file_records_version_key_and_approved_capabilities(
        registry: PluginRegistry, plugin: Path, signer: Signer) -> None:
    installed(registry, plugin, signer)
    state = json.loads((registry.root / "state.json").read_text())["plugins"]["weather"]
    assert state["version"] == "1.0.0" and state["enabled"] is True
    assert state["key_id"] == signing.key_id(signer.key.public_key())
    assert state["approved"]["network"] == ["api.weather.example"]
    assert state["installed_at"] > 0 and state["pending"] is None
    assert stat.S_IMODE((registry.root / "state.json").stat().st_mode) == 0o644


def test_a_new_plugin_without_approval_waits_and_does_not_run(
        registry: PluginRegistry, plugin: Path, signer: Signer) -> None:
    outcome = registry.install(plugin, signer.keyring)
    assert outcome.status == "pending"
    assert outcome.asks == ["network host api.weather.example", "secret API_KEY"]
    assert registry.active(signer.keyring) == []
    assert (registry.root / "pending" / "weather" / "plugin.py").is_file()
    assert not (registry.root / "installed" / "weather").exists()
    [record] = registry.list()
    assert record.version is None and record.pending is not None
    assert record.pending.version == "1.0.0"


def test_approving_a_waiting_plugin_runs_it(registry: PluginRegistry, plugin: Path,
                                            signer: Signer) -> None:
    registry.install(plugin, signer.keyring)
    assert registry.approve("weather").status == "installed"
    assert [p.name for p in registry.active(signer.keyring)] == ["weather"]
    assert not (registry.root / "pending" / "weather").exists()


def test_an_unsigned_plugin_is_refused_and_the_root_is_not_made(
        registry: PluginRegistry, tmp_path: Path, signer: Signer) -> None:
    folder = write_plugin(tmp_path / "src" / "weather")
    with pytest.raises(PluginRefused, match="unsigned plugin"):
        registry.install(folder, signer.keyring, approve=True)
    assert not (tmp_path / "box").exists()


def test_a_plugin_signed_by_a_foreign_key_is_refused_and_the_root_is_not_made(
        registry: PluginRegistry, tmp_path: Path, signer: Signer, stranger: Signer) -> None:
    folder = signed_plugin(tmp_path / "src" / "weather", stranger)
    with pytest.raises(PluginRefused, match="not in this box's plugin keyring"):
        registry.install(folder, signer.keyring, approve=True)
    assert not (tmp_path / "box").exists()


def _change(folder: Path) -> None:
    (folder / "plugin.py").write_text("import os\nos.system('rm -rf /')\n")


def _add(folder: Path) -> None:
    (folder / "helper.py").write_text("print('unsigned')\n")


def _remove(folder: Path) -> None:
    (folder / "data" / "towns.txt").unlink()


@pytest.mark.parametrize("tamper", [_change, _add, _remove], ids=["changed", "added",
                                                                  "removed"])
def test_a_tampered_upgrade_is_refused_and_the_box_is_byte_for_byte_unchanged(
        registry: PluginRegistry, plugin: Path, tmp_path: Path, signer: Signer,
        tamper: Callable[[Path], None]) -> None:
    installed(registry, plugin, signer)
    before = snapshot(registry.root)
    upgrade = signed_plugin(tmp_path / "src2" / "weather", signer, version="1.1.0")
    tamper(upgrade)
    with pytest.raises(PluginRefused, match="bad signature"):
        registry.install(upgrade, signer.keyring, approve=True)
    assert snapshot(registry.root) == before


def test_an_upgrade_within_the_approved_capabilities_runs_without_approval(
        registry: PluginRegistry, plugin: Path, tmp_path: Path, signer: Signer) -> None:
    installed(registry, plugin, signer)
    upgrade = signed_plugin(tmp_path / "src2" / "weather", signer, version="1.1.0",
                            secrets=())
    outcome = registry.install(upgrade, signer.keyring)
    assert (outcome.status, outcome.asks) == ("upgraded", [])
    [active] = registry.active(signer.keyring)
    assert active.version == "1.1.0" and active.granted.secrets == ()


def test_an_upgrade_asking_for_a_new_host_waits_and_the_old_version_keeps_running(
        registry: PluginRegistry, plugin: Path, tmp_path: Path, signer: Signer) -> None:
    installed(registry, plugin, signer)
    upgrade = signed_plugin(tmp_path / "src2" / "weather", signer, version="2.0.0",
                            network=("api.weather.example", "tracker.example"))
    outcome = registry.install(upgrade, signer.keyring)
    assert (outcome.status, outcome.asks) == ("pending", ["network host tracker.example"])
    [active] = registry.active(signer.keyring)
    assert active.version == "1.0.0"
    assert active.granted.network == ("api.weather.example",)


def test_approving_the_upgrade_runs_the_new_version_with_the_new_host(
        registry: PluginRegistry, plugin: Path, tmp_path: Path, signer: Signer) -> None:
    installed(registry, plugin, signer)
    upgrade = signed_plugin(tmp_path / "src2" / "weather", signer, version="2.0.0",
                            network=("api.weather.example", "tracker.example"))
    registry.install(upgrade, signer.keyring)
    assert registry.approve("weather").status == "upgraded"
    [active] = registry.active(signer.keyring)
    assert active.version == "2.0.0"
    assert active.granted.network == ("api.weather.example", "tracker.example")
    assert registry.list()[0].pending is None


def test_an_upgrade_asking_for_more_with_approve_runs_at_once(
        registry: PluginRegistry, plugin: Path, tmp_path: Path, signer: Signer) -> None:
    installed(registry, plugin, signer)
    upgrade = signed_plugin(tmp_path / "src2" / "weather", signer, version="2.0.0",
                            secrets=("API_KEY", "TRACKER_TOKEN"))
    outcome = registry.install(upgrade, signer.keyring, approve=True)
    assert (outcome.status, outcome.asks) == ("upgraded", ["secret TRACKER_TOKEN"])
    assert registry.active(signer.keyring)[0].version == "2.0.0"


def test_reinstalling_the_same_version_and_content_changes_nothing(
        registry: PluginRegistry, plugin: Path, signer: Signer) -> None:
    installed(registry, plugin, signer)
    before = snapshot(registry.root)
    assert registry.install(plugin, signer.keyring).status == "unchanged"
    assert snapshot(registry.root) == before


def test_the_same_version_with_other_content_is_refused(
        registry: PluginRegistry, plugin: Path, signer: Signer) -> None:
    installed(registry, plugin, signer)
    (plugin / "plugin.py").write_text("def forecast(request):\n    return 'rain'\n")
    sign_plugin(plugin, signer.key)
    with pytest.raises(PluginRefused, match=r"1\.0\.0 is installed with other content; bump"):
        registry.install(plugin, signer.keyring, approve=True)


def test_a_downgrade_is_refused(registry: PluginRegistry, tmp_path: Path,
                                signer: Signer) -> None:
    registry.install(signed_plugin(tmp_path / "new" / "weather", signer, version="1.2.0"),
                     signer.keyring, approve=True)
    with pytest.raises(PluginRefused, match=r"1\.0\.0 is older and downgrades are refused"):
        registry.install(signed_plugin(tmp_path / "old" / "weather", signer),
                         signer.keyring, approve=True)
    assert registry.active(signer.keyring)[0].version == "1.2.0"


def test_a_disabled_plugin_does_not_run_and_enabling_brings_it_back(
        registry: PluginRegistry, plugin: Path, signer: Signer) -> None:
    installed(registry, plugin, signer)
    registry.disable("weather")
    assert registry.active(signer.keyring) == []
    assert (registry.root / "installed" / "weather").is_dir()
    registry.enable("weather")
    assert [p.name for p in registry.active(signer.keyring)] == ["weather"]


def test_removing_a_plugin_deletes_its_files_data_and_secrets(
        registry: PluginRegistry, plugin: Path, signer: Signer) -> None:
    installed(registry, plugin, signer)
    registry.set_secret("weather", "API_KEY", "s3cret")
    (registry.data_dir("weather") / "cache.json").write_text("{}")
    registry.remove("weather")
    assert registry.list() == []
    for part in ("installed", "pending", "data", "secrets"):
        assert not (registry.root / part / "weather").exists()


def test_an_archive_made_by_pack_installs(registry: PluginRegistry, plugin: Path,
                                          tmp_path: Path, signer: Signer) -> None:
    archive = pack(plugin, tmp_path / "out")
    assert registry.install(archive, signer.keyring, approve=True).status == "installed"
    assert registry.active(signer.keyring)[0].folder.joinpath("data", "towns.txt").is_file()


def test_an_archive_with_a_path_leaving_the_folder_is_refused_and_nothing_written(
        registry: PluginRegistry, plugin: Path, tmp_path: Path, signer: Signer) -> None:
    archive = tmp_path / "evil.plugin.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in ("appliance-plugin.toml", "plugin.py", "plugin.sig"):
            tar.add(plugin / name, arcname=name)
        tar.add(plugin / "plugin.py", arcname="../../escaped.py")
    with pytest.raises(PluginRefused, match="points outside"):
        registry.install(archive, signer.keyring, approve=True)
    assert not (tmp_path / "box").exists()
    assert not list(tmp_path.rglob("escaped.py"))


def test_an_archive_with_a_symlink_is_refused(registry: PluginRegistry, plugin: Path,
                                              tmp_path: Path, signer: Signer) -> None:
    archive = tmp_path / "evil.plugin.tar.gz"
    link = tarfile.TarInfo("data/towns.txt")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/shadow"
    with tarfile.open(archive, "w:gz") as tar:
        for name in ("appliance-plugin.toml", "plugin.py", "plugin.sig"):
            tar.add(plugin / name, arcname=name)
        tar.addfile(link)
    with pytest.raises(PluginRefused, match="is a link"):
        registry.install(archive, signer.keyring, approve=True)
    assert not (tmp_path / "box").exists()


def test_a_symlink_in_the_source_folder_is_refused(registry: PluginRegistry, plugin: Path,
                                                   tmp_path: Path, signer: Signer) -> None:
    (plugin / "shadow").symlink_to("/etc/shadow")
    with pytest.raises(PluginRefused, match="symbolic link"):
        registry.install(plugin, signer.keyring, approve=True)
    assert not (tmp_path / "box").exists()


def test_byte_caches_in_the_source_are_not_copied(registry: PluginRegistry, plugin: Path,
                                                  signer: Signer) -> None:
    (plugin / "__pycache__").mkdir()
    (plugin / "__pycache__" / "plugin.cpython-311.pyc").write_bytes(b"\x00")
    installed(registry, plugin, signer)
    assert not (registry.root / "installed" / "weather" / "__pycache__").exists()


def test_a_declared_secret_is_kept_owner_only_and_read_back(
        registry: PluginRegistry, plugin: Path, signer: Signer) -> None:
    installed(registry, plugin, signer)
    registry.set_secret("weather", "API_KEY", "s3cret")
    path = registry.secrets_dir("weather") / "API_KEY"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert registry.secret("weather", "API_KEY") == "s3cret"


def test_a_secret_the_plugin_does_not_declare_is_refused(
        registry: PluginRegistry, plugin: Path, signer: Signer) -> None:
    installed(registry, plugin, signer)
    with pytest.raises(PluginRefused, match="declares no secret 'DB_PASSWORD'"):
        registry.set_secret("weather", "DB_PASSWORD", "x")
    assert not registry.secrets_dir("weather").exists()


def test_a_skill_named_like_a_builtin_one_is_refused(
        registry: PluginRegistry, tmp_path: Path, signer: Signer) -> None:
    assert {"hours", "faq", "calc", "handoff"} <= builtin_skill_names()
    folder = signed_plugin(tmp_path / "src" / "weather", signer, skill="hours")
    with pytest.raises(PluginRefused, match=r"hours \(taken by the box's own skills\)"):
        registry.install(folder, signer.keyring, approve=True)
    assert not (tmp_path / "box").exists()


def test_a_skill_another_plugin_has_is_refused(registry: PluginRegistry, plugin: Path,
                                               tmp_path: Path, signer: Signer) -> None:
    installed(registry, plugin, signer)
    rival = signed_plugin(tmp_path / "src" / "meteo", signer, name="meteo")
    with pytest.raises(PluginRefused, match=r"forecast \(taken by plugin weather\)"):
        registry.install(rival, signer.keyring, approve=True)


def test_files_changed_on_the_box_are_not_run(registry: PluginRegistry, plugin: Path,
                                              signer: Signer,
                                              caplog: pytest.LogCaptureFixture) -> None:
    installed(registry, plugin, signer)
    (registry.root / "installed" / "weather" / "plugin.py").write_text("evil = True\n")
    with caplog.at_level(logging.WARNING):
        assert registry.active(signer.keyring) == []
    assert "plugin weather not run: bad signature" in caplog.text


def test_a_plugin_whose_key_left_the_keyring_is_not_run(
        registry: PluginRegistry, plugin: Path, signer: Signer, stranger: Signer) -> None:
    installed(registry, plugin, signer)
    assert registry.active(stranger.keyring) == []


def test_an_unknown_name_is_refused_naming_the_installed_ones(
        registry: PluginRegistry, plugin: Path, signer: Signer) -> None:
    installed(registry, plugin, signer)
    with pytest.raises(PluginRefused, match=r"no plugin named wether \(installed: weather\)"):
        registry.disable("wether")


def test_the_stamp_moves_with_every_change(registry: PluginRegistry, plugin: Path,
                                           signer: Signer) -> None:
    assert registry.stamp() == 0
    installed(registry, plugin, signer)
    os.utime(registry.state_path, ns=(1, 1))  # an old stamp, so the clock's tick cannot hide
    assert registry.stamp() == 1
    registry.disable("weather")
    assert registry.stamp() > 1
