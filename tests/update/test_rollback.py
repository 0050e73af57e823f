"""``appliance update rollback``: the operator's way back for a release that passed its trial
boot but misbehaves afterwards (a rollout's smoke check, the load-test gate)."""

from __future__ import annotations

import pytest

from appliance.update.bootloader import FALLBACK, PRIMARY
from appliance.update.confirm import confirm_boot
from appliance.update.errors import UpdateRefused
from appliance.update.install import install_bundle
from appliance.update.rollback import roll_back
from tests.update.conftest import Box, Readyz


def confirmed_on_b(box: Box) -> None:
    install_bundle(box.settings, box.make_bundle("0.2.0"))
    box.boot()
    box.set_release("0.2.0")
    assert confirm_boot(box.settings).outcome == "confirmed"


def test_a_confirmed_release_is_rolled_back_to_the_other_slot(box: Box, readyz: Readyz
                                                              ) -> None:
    confirmed_on_b(box)

    done = roll_back(box.settings)

    assert (done.slot, done.version, done.reboot_needed) == ("a", "0.1.0", True)
    assert box.next_boot().file_name == "appliance-a.conf"
    assert box.next_boot().sort_key == PRIMARY
    assert next(e for e in box.entries() if e.slot == "b").sort_key == FALLBACK
    assert box.boot().slot == "a"
    assert len(box.events("update_rolled_back")) == 1


def test_after_a_rollback_the_box_can_go_forward_again(box: Box, readyz: Readyz) -> None:
    confirmed_on_b(box)
    roll_back(box.settings)
    box.boot()
    box.set_release("0.1.0")

    done = install_bundle(box.settings, box.make_bundle("0.3.0", seed=3))

    assert done.slot == "b"
    assert box.next_boot().file_name == "appliance-b+1.conf"


def test_an_install_not_yet_booted_is_cancelled(box: Box) -> None:
    install_bundle(box.settings, box.make_bundle("0.2.0"))

    done = roll_back(box.settings)

    assert (done.slot, done.reboot_needed) == ("a", False)
    assert [e.slot for e in box.entries()] == ["a"]
    assert box.next_boot().sort_key == PRIMARY
    assert box.events("update_cancelled")


def test_a_spent_trial_needs_only_a_reboot(box: Box) -> None:
    install_bundle(box.settings, box.make_bundle("0.2.0"))
    box.boot()
    box.set_release("0.2.0")

    done = roll_back(box.settings)

    assert (done.slot, done.reboot_needed) == ("a", True)
    assert box.boot().slot == "a"


def test_with_nothing_in_the_other_slot_there_is_nothing_to_roll_back_to(box: Box) -> None:
    with pytest.raises(UpdateRefused, match="no bootable entry"):
        roll_back(box.settings)


def test_a_failed_trial_not_yet_settled_by_confirm_is_recorded_as_rolled_back(box: Box) -> None:
    install_bundle(box.settings, box.make_bundle("0.2.0"))
    assert box.boot().slot == "b"  # the trial, which never gets ready
    assert box.boot().slot == "a"  # no tries left: back on a, before confirm has run

    done = roll_back(box.settings)

    assert (done.slot, done.reboot_needed) == ("a", False)
    assert len(box.events("update_rolled_back")) == 1
    assert not box.events("update_cancelled")
    assert next(e for e in box.entries() if e.slot == "b").state == "bad"


def test_the_crash_loop_escalation_rolls_back_a_trial_boot_at_once(box: Box) -> None:
    install_bundle(box.settings, box.make_bundle("0.2.0"))
    box.boot()
    box.set_release("0.2.0")

    done = roll_back(box.settings, trial_only=True)

    assert (done.slot, done.reboot_needed) == ("a", True)
    assert box.boot().slot == "a"


def test_the_crash_loop_escalation_leaves_a_confirmed_release_alone(box: Box, readyz: Readyz
                                                                   ) -> None:
    confirmed_on_b(box)

    done = roll_back(box.settings, trial_only=True)

    assert (done.slot, done.reboot_needed) == ("b", False)
    assert "not on a trial boot" in done.message
    assert box.next_boot().file_name == "appliance-b.conf"
    assert box.events("update_rolled_back") == []
