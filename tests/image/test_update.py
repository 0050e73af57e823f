"""A/B updates on the booted box: a good bundle installs into slot B and boots from it; a
bundle whose appliance never gets healthy is rolled back by the boot counter; a bundle the box
does not trust is refused with nothing written. Runs after test_boot.py on the same VM."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from image.variants import BROKEN_GATEWAY
from tests.image.bundles import (
    BROKEN,
    BUNDLE_ON_BOX,
    GOOD,
    SHORT_DEADLINE,
    make_bundle,
    wait_for_confirm,
)
from tests.image.conftest import Box

# Each test reboots or installs a 2 GiB slot under emulation: minutes, not seconds.
pytestmark = [pytest.mark.image, pytest.mark.timeout(2400)]


def install(box: Box, bundle: Path, *args: str) -> tuple[int, str]:
    box.upload(bundle, BUNDLE_ON_BOX)
    try:
        result = box.appliance(f"update install {BUNDLE_ON_BOX} {' '.join(args)}", check=False,
                               timeout=1800)
    finally:
        box.ssh(f"rm -f {BUNDLE_ON_BOX}", check=False)
    return result.returncode, result.stdout + result.stderr


@pytest.fixture(scope="module")
def bundles(image_out: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("bundles")
    from appliance.update.signing import generate_keypair

    stranger, _ = generate_keypair(tmp, "stranger")
    return {"good": make_bundle(image_out, tmp, GOOD),
            "broken": make_bundle(image_out, tmp, BROKEN, {**BROKEN_GATEWAY, **SHORT_DEADLINE}),
            "untrusted": make_bundle(image_out, tmp, "0.1.3", key=stranger)}


def test_a_bundle_signed_by_an_unknown_key_is_refused_and_nothing_changes(
        box: Box, bundles: dict[str, Path]) -> None:
    before = box.status()
    code, out = install(box, bundles["untrusted"])
    assert code == 2 and "keyring" in out
    assert box.status()["slots"] == before["slots"]


def test_a_good_bundle_installs_into_slot_b_and_the_box_boots_it(
        box: Box, bundles: dict[str, Path]) -> None:
    code, out = install(box, bundles["good"])
    assert code == 0, out
    assert box.status()["next_boot"].startswith("appliance-b+")
    box.reboot_and_wait()
    status = box.status()
    assert (status["booted_slot"], status["version"]) == ("b", GOOD)


def test_the_new_slot_is_confirmed_once_healthy(box: Box) -> None:
    wait_for_confirm(box)
    entry = box.status()["slots"]["b"]["entry"]
    assert entry["file"] == "appliance-b.conf" and entry["state"] == "good"


def test_the_updated_box_answers_chat(box: Box) -> None:
    token = box.token("tester", "chat")
    box.wait_ready()
    response = httpx.post(box.url("/v1/chat/completions"), verify=str(box.ca_file), timeout=300,
                          headers={"Authorization": f"Bearer {token}"},
                          json={"model": "smollm2-135m-instruct", "max_tokens": 4,
                                "messages": [{"role": "user", "content": "Hi"}]})
    assert response.status_code == 200, \
        f"{response.status_code} {response.text}; the services' journal:\n{box.services_journal()}"


def test_a_bundle_that_never_gets_healthy_rolls_back_to_the_previous_slot(
        box: Box, bundles: dict[str, Path]) -> None:
    code, out = install(box, bundles["broken"])
    assert code == 0, out
    assert box.status()["next_boot"].startswith("appliance-a+")
    mark = len(box.vm.console())
    box.ssh("systemctl reboot", check=False, timeout=30)
    # Slot A boots on trial, its gateway never answers, confirm gives up and reboots; with no
    # tries left, systemd-boot starts slot B again.
    box.vm.wait_console("appliance.slot=a", 300, after=mark)
    box.vm.wait_console("reboot: Restarting system", 900, after=mark)
    box.wait_ready()
    status = box.status()
    assert (status["booted_slot"], status["version"]) == ("b", GOOD)
    assert status["slots"]["a"]["entry"]["state"] == "bad"


def test_the_rollback_is_recorded_as_an_event(box: Box) -> None:
    wait_for_confirm(box)
    token = box.token("operator", "admin")
    events = httpx.get(box.url("/v1/ops/events"), verify=str(box.ca_file), timeout=60,
                       headers={"Authorization": f"Bearer {token}"}).json()["events"]
    kinds = [event["kind"] for event in events if event["source"] == "update"]
    assert "update_rolled_back" in kinds
    assert box.status()["pending"] is None
