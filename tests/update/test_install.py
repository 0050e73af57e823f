"""Installing into the other slot, the trial boot, its confirmation and the rollback."""

from __future__ import annotations

import json

import pytest

from appliance.update.bootloader import FALLBACK, PRIMARY
from appliance.update.confirm import confirm_boot
from appliance.update.errors import UpdateRefused
from appliance.update.install import install_bundle
from tests.update.conftest import Box, Readyz, payload_bytes


def test_a_good_bundle_goes_into_the_inactive_slot_and_boots_next_with_one_try(
        box: Box) -> None:
    bundle = box.make_bundle("0.2.0", seed=2, rootfs_size=3 << 20)
    done = install_bundle(box.settings, bundle)

    assert (done.slot, done.version, done.from_slot) == ("b", "0.2.0", "a")
    assert box.slot("b").read_bytes()[:3 << 20] == payload_bytes(2, 3 << 20)
    assert (box.esp / "appliance/b/vmlinuz").read_bytes() == payload_bytes(102, 300_000)
    assert (box.esp / "appliance/b/initrd.img").read_bytes() == payload_bytes(202, 500_000)
    following = box.next_boot()
    assert (following.file_name, following.sort_key, following.tries_left) == (
        "appliance-b+1.conf", PRIMARY, 1)
    assert following.options is not None and "appliance.slot=b" in following.options
    old = next(e for e in box.entries() if e.slot == "a")
    assert (old.file_name, old.sort_key, old.state) == ("appliance-a.conf", FALLBACK, "good")


def test_an_install_is_remembered_for_the_next_boot(box: Box) -> None:
    install_bundle(box.settings, box.make_bundle("0.2.0"))
    state = json.loads((box.data / "update" / "state.json").read_text())["pending"]
    assert (state["slot"], state["version"], state["from_version"]) == ("b", "0.2.0", "0.1.0")
    assert next(e["reason"] for e in box.events("update_installed")).startswith(
        "0.2.0 installed into slot b")


def test_the_slot_a_healthy_trial_boots_is_blessed_and_stays_first(box: Box,
                                                                    readyz: Readyz) -> None:
    install_bundle(box.settings, box.make_bundle("0.2.0"))
    booted = box.boot()
    assert (booted.slot, booted.file_name) == ("b", "appliance-b+0-1.conf")
    box.set_release("0.2.0")  # what slot b's root file system says

    result = confirm_boot(box.settings)

    assert result.outcome == "confirmed"
    assert readyz.hits >= 1
    assert box.next_boot().file_name == "appliance-b.conf"
    assert box.boot().file_name == "appliance-b.conf"  # blessed: no counter any more
    assert box.boot().slot == "b"
    assert not (box.data / "update" / "state.json").exists()
    assert len(box.events("update_confirmed")) == 1


def test_with_tls_on_the_health_check_trusts_the_boxs_ca(box: Box,
                                                          tls_readyz: Readyz) -> None:
    install_bundle(box.settings, box.make_bundle("0.2.0"))
    box.boot()
    assert confirm_boot(box.settings).outcome == "confirmed"
    assert tls_readyz.hits >= 1


def test_a_trial_that_is_never_confirmed_falls_back_to_the_old_slot(box: Box,
                                                                     readyz: Readyz) -> None:
    install_bundle(box.settings, box.make_bundle("0.2.0"))
    assert box.boot().slot == "b"  # the trial boot ... and the power goes before confirm

    booted = box.boot()
    assert (booted.slot, booted.file_name) == ("a", "appliance-a.conf")
    result = confirm_boot(box.settings)

    assert result.outcome == "rolled_back"
    assert "0.2.0 on slot b failed" in result.message
    assert [e["severity"] for e in box.events("update_rolled_back")] == ["critical"]
    assert not (box.data / "update" / "state.json").exists()
    bad = next(e for e in box.entries() if e.slot == "b")
    assert bad.state == "bad"
    assert box.next_boot().sort_key == PRIMARY and box.next_boot().slot == "a"
    assert box.boot().slot == "a"


def test_an_unhealthy_trial_is_rebooted_into_the_old_slot(box: Box,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    install_bundle(box.settings, box.make_bundle("0.2.0"))
    box.boot()
    monkeypatch.setenv("APPLIANCE_HTTP__PORT", "9")  # nothing answers there
    monkeypatch.setenv("APPLIANCE_UPDATE__HEALTH_DEADLINE_S", "1.5")

    result = confirm_boot(box.settings)

    assert result.outcome == "unhealthy"
    assert (box.root / "rebooted").exists()  # update.reboot_command ran
    assert len(box.events("update_unhealthy")) == 1
    assert box.boot().slot == "a"


def test_confirm_before_the_reboot_only_says_the_trial_is_waiting(box: Box) -> None:
    install_bundle(box.settings, box.make_bundle("0.2.0"))
    result = confirm_boot(box.settings)
    assert result.outcome == "waiting"
    assert box.next_boot().file_name == "appliance-b+1.conf"
    assert not box.events("update_rolled_back")


def test_the_next_update_goes_back_into_slot_a(box: Box, readyz: Readyz) -> None:
    install_bundle(box.settings, box.make_bundle("0.2.0"))
    box.boot()
    box.set_release("0.2.0")
    confirm_boot(box.settings)

    done = install_bundle(box.settings, box.make_bundle("0.3.0", seed=3))

    assert done.slot == "a"
    assert box.slot("a").read_bytes()[:3 << 20] == payload_bytes(3, 3 << 20)
    assert box.next_boot().file_name == "appliance-a+1.conf"
    assert next(e for e in box.entries() if e.slot == "b").sort_key == FALLBACK


def test_no_install_while_the_running_slot_is_still_on_trial(box: Box) -> None:
    install_bundle(box.settings, box.make_bundle("0.2.0"))
    box.boot()
    box.set_release("0.2.0")
    with pytest.raises(UpdateRefused, match=r"still on trial.*appliance update confirm"):
        install_bundle(box.settings, box.make_bundle("0.3.0", seed=3))


def test_a_crash_while_writing_the_slot_leaves_the_old_slot_booting(box: Box) -> None:
    class PowerCut(Exception):
        pass

    def cut(what: str, done: int, total: int) -> None:
        if what == "write" and done > total // 2:
            raise PowerCut

    with pytest.raises(PowerCut):
        install_bundle(box.settings, box.make_bundle("0.2.0"), progress=cut)

    assert [e.slot for e in box.entries()] == ["a"]
    assert not list((box.esp / "appliance" / "b").glob("vmlinuz"))
    assert box.boot().slot == "a"


def test_a_bundle_changed_between_the_two_passes_never_becomes_bootable(box: Box) -> None:
    bundle = box.make_bundle("0.2.0")
    tail = bundle.stat().st_size - 20_000  # inside vmlinuz, the last payload

    tampered = []

    def tamper(what: str, done: int, total: int) -> None:
        if what == "write" and not tampered:
            tampered.append(done)
            with bundle.open("r+b") as handle:
                handle.seek(tail)
                byte = handle.read(1)
                handle.seek(tail)
                handle.write(bytes([byte[0] ^ 0xFF]))

    with pytest.raises(UpdateRefused, match="vmlinuz does not match its sha256"):
        install_bundle(box.settings, bundle, progress=tamper)

    assert [e.slot for e in box.entries()] == ["a"]
    assert not (box.esp / "appliance" / "b" / "vmlinuz").exists()
    assert box.boot().slot == "a"


def test_confirm_on_an_ordinary_boot_changes_nothing(box: Box) -> None:
    before = box.snapshot()
    result = confirm_boot(box.settings)
    assert result.outcome == "nothing"
    assert box.snapshot() == before
    assert not box.events()
