"""ansible/library/appliance_network.py, run for real by `ansible` against network namespaces.

Each test makes its own namespace (nmt-<random>) holding a veth pair v0/v1 (v1 up, as a
neighbour would be), runs the module through the ad-hoc `ansible` command (the bad
declarations: tasks of one `ansible-playbook` run), and reads the namespace's real state back
with pyroute2. The namespace is deleted in teardown. Starting states for tests about changes
are made with iproute2, not with the module under test.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import os
import re
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from pyroute2 import IPRoute

from tests.leakcheck import register_netns

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ROOT / "ansible" / "library"
ANSIBLE = Path(sys.executable).with_name("ansible")
RESULT_LINE = re.compile(r"^localhost \| (SUCCESS|CHANGED|FAILED!) => ", re.MULTILINE)

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not ANSIBLE.exists(), reason="needs root and ansible-core (.[fleet])"
)


# --- the namespace and what is in it ---------------------------------------------------------


def ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=False)


@pytest.fixture
def netns() -> Iterator[str]:
    """A fresh namespace with a veth pair v0/v1; v0 is the box's link, v1 its neighbour."""
    name = f"nmt-{uuid.uuid4().hex[:10]}"
    register_netns(name)
    assert ip("netns", "add", name).returncode == 0
    try:
        for args in (
            ("link", "add", "v0", "type", "veth", "peer", "name", "v1"),
            ("link", "set", "v1", "up"),
        ):
            done = ip("-n", name, *args)
            assert done.returncode == 0, done.stderr
        yield name
    finally:
        ip("netns", "del", name)
        assert name not in ip("netns", "list").stdout


@dataclass
class Link:
    up: bool
    mtu: int
    kind: str | None
    addresses: set[str]
    vlan_id: int | None = None


def links(netns: str) -> dict[str, Link]:
    """The namespace's links as the kernel reports them (not as the module does)."""
    with IPRoute(netns=netns, flags=0) as ipr:
        found = {}
        for msg in ipr.get_links():
            info = msg.get_attr("IFLA_LINKINFO")
            data = info.get_attr("IFLA_INFO_DATA") if info else None
            found[msg["index"]] = (msg, info, data)
        by_name = {}
        for index, (msg, info, data) in found.items():
            by_name[msg.get_attr("IFLA_IFNAME")] = Link(
                up=bool(msg["flags"] & 1),
                mtu=msg.get_attr("IFLA_MTU"),
                kind=info.get_attr("IFLA_INFO_KIND") if info else None,
                addresses={
                    f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}"
                    for a in ipr.get_addr(index=index)
                    if not a.get_attr("IFA_ADDRESS").startswith("fe80:")
                },
                vlan_id=data.get_attr("IFLA_VLAN_ID") if data else None,
            )
        return by_name


def routes(netns: str) -> set[str]:
    """Main-table routes that are not the kernel's own, as 'dst via gw dev metric' lines."""
    names = {index: name for name, index in _indexes(netns).items()}
    lines = set()
    with IPRoute(netns=netns, flags=0) as ipr:
        for family in (2, 10):
            for msg in ipr.get_routes(family=family, table=254):
                if msg["proto"] == 2:  # RTPROT_KERNEL: connected and link-local routes
                    continue
                dst = msg.get_attr("RTA_DST") or ("0.0.0.0" if family == 2 else "::")
                words = [f"{dst}/{msg['dst_len']}"]
                if msg.get_attr("RTA_GATEWAY"):
                    words += ["via", msg.get_attr("RTA_GATEWAY")]
                words += ["dev", names[msg.get_attr("RTA_OIF")]]
                lines.add(" ".join([*words, "metric", str(msg.get_attr("RTA_PRIORITY") or 0)]))
    return lines


def _indexes(netns: str) -> dict[str, int]:
    with IPRoute(netns=netns, flags=0) as ipr:
        return {msg.get_attr("IFLA_IFNAME"): msg["index"] for msg in ipr.get_links()}


def kernel_has_vlans(netns: str) -> bool:
    """Whether this kernel can make 802.1Q links (some VM kernels are built without)."""
    made = ip("-n", netns, "link", "add", "link", "v0", "name", "probe", "type", "vlan", "id", "9")
    ip("-n", netns, "link", "del", "probe")
    return made.returncode == 0


# --- running the module through ansible ------------------------------------------------------


@dataclass
class Run:
    status: str  # SUCCESS, CHANGED or FAILED!
    result: dict
    diff: str  # what the ad-hoc callback printed before the result: the --diff text

    @property
    def changed(self) -> bool:
        return self.result["changed"]


def ansible_env(tmp_path: Path) -> dict[str, str]:
    """Ansible's settings and scratch space kept in the test's directory."""
    (tmp_path / "ansible.cfg").touch()  # no ansible.cfg from the tree or the home directory
    return {
        **os.environ,
        "ANSIBLE_CONFIG": str(tmp_path / "ansible.cfg"),
        "ANSIBLE_HOME": str(tmp_path / "home"),
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"),
        "ANSIBLE_REMOTE_TEMP": str(tmp_path / "tmp"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_LOCALHOST_WARNING": "0",
        "ANSIBLE_PIPELINING": "1",
    }


def run_module(netns: str, tmp_path: Path, *flags: str, fails: bool = False, **args: object) -> Run:
    """`ansible localhost -m appliance_network -a <json>` as an operator would type it."""
    done = subprocess.run(
        [
            str(ANSIBLE), "localhost", "-M", str(LIBRARY), "-m", "appliance_network",
            "-a", json.dumps({"netns": netns, **args}),
            "-e", f"ansible_python_interpreter={sys.executable}",
            *flags,
        ],
        capture_output=True, text=True, env=ansible_env(tmp_path), cwd=tmp_path, timeout=60,
        check=False,
    )  # fmt: skip
    found = RESULT_LINE.search(done.stdout)
    assert found, f"no result in ansible's output:\n{done.stdout}\n{done.stderr}"
    result, _ = json.JSONDecoder().raw_decode(done.stdout, found.end())
    assert done.returncode == (2 if found[1] == "FAILED!" else 0), done.stderr
    outcome = Run(found[1], result, done.stdout[: found.start()])
    assert (outcome.status == "FAILED!") == fails, f"{outcome.status}: {result.get('msg')}"
    return outcome


BOX = {
    "interfaces": [
        {"name": "v0", "state": "up", "mtu": 1400, "addresses": ["10.77.0.1/24", "fd00:77::1/64"]}
    ],
    "routes": [
        {"dst": "10.78.0.0/16", "gateway": "10.77.0.254", "metric": 50},
        {"dst": "fd00:78::/48", "gateway": "fd00:77::fe"},
        {"dst": "default", "dev": "v0"},
    ],
}
BOX_ROUTES = {
    "10.78.0.0/16 via 10.77.0.254 dev v0 metric 50",
    "fd00:78::/48 via fd00:77::fe dev v0 metric 1024",
    "0.0.0.0/0 dev v0 metric 0",
}

VLAN_BOX = {
    "vlans": [{"parent": "v0", "id": 10}],
    "interfaces": [{"name": "v0.10", "state": "up", "addresses": ["10.77.10.1/24"]}],
    "routes": [{"dst": "10.79.0.0/16", "gateway": "10.77.10.254"}],
}


def without_link_local(network: dict) -> dict:
    """The module's ``network`` less fe80:: addresses, which the kernel adds when it likes."""
    links = {
        name: {**link, "addresses": [a for a in link["addresses"] if not a.startswith("fe80:")]}
        for name, link in network["links"].items()
    }
    return {**network, "links": links}


def configure_box(netns: str) -> None:
    """BOX made with iproute2, not the module: the starting point of tests about changes."""
    for args in (
        "link set v0 mtu 1400 up",
        "addr add 10.77.0.1/24 dev v0",
        "addr add fd00:77::1/64 dev v0 nodad",
        "route add 10.78.0.0/16 via 10.77.0.254 metric 50",
        "route add fd00:78::/48 via fd00:77::fe",
        "route add default dev v0",
    ):
        done = ip("-n", netns, *args.split())
        assert done.returncode == 0, f"ip {args}: {done.stderr}"
    assert routes(netns) == BOX_ROUTES


# --- the tests -------------------------------------------------------------------------------


def test_create_applies_everything_and_a_second_run_changes_nothing(
    netns: str, tmp_path: Path
) -> None:
    first = run_module(netns, tmp_path, **BOX)
    assert first.status == "CHANGED" and first.changed
    assert first.result["changes"] == [
        "v0: mtu 1500 -> 1400",
        "v0: set up",
        "v0: add address 10.77.0.1/24; add address fd00:77::1/64",
        "add route 10.78.0.0/16 via 10.77.0.254 metric 50",
        "add route fd00:78::/48 via fd00:77::fe metric 1024",
        "add route 0.0.0.0/0 dev v0 metric 0",
    ]
    v0 = links(netns)["v0"]
    assert (v0.up, v0.mtu, v0.addresses) == (True, 1400, {"10.77.0.1/24", "fd00:77::1/64"})
    assert routes(netns) == BOX_ROUTES
    assert first.result["network"]["routes"] == sorted(BOX_ROUTES)

    again = run_module(netns, tmp_path, "--diff", **BOX)
    assert again.status == "SUCCESS"
    assert (again.changed, again.result["changes"]) == (False, [])
    assert not again.diff.strip()  # and no diff
    assert without_link_local(again.result["network"]) == without_link_local(
        first.result["network"]
    )
    assert routes(netns) == BOX_ROUTES
    assert not run_module(netns, tmp_path, "--check", **BOX).changed  # check mode agrees


def test_a_change_is_applied_in_place(netns: str, tmp_path: Path) -> None:
    configure_box(netns)
    change = {
        "interfaces": [
            {"name": "v0", "mtu": 1300, "addresses": ["10.77.0.2/24"], "exclusive": True}
        ],
        "routes": [
            {"dst": "10.78.0.0/16", "gateway": "10.77.0.253", "dev": "v0", "metric": 50},
            {"dst": "default", "dev": "v0"},
        ],
    }
    expected = [
        "v0: mtu 1400 -> 1300",
        "v0: remove address 10.77.0.1/24; remove address fd00:77::1/64; add address 10.77.0.2/24",
        # The kernel dropped v0's IPv4 routes with its last IPv4 address: both are put back,
        # the default route too, though it was already right when the task began.
        "add route 10.78.0.0/16 via 10.77.0.253 dev v0 metric 50",
        "add route 0.0.0.0/0 dev v0 metric 0",
    ]
    assert run_module(netns, tmp_path, "--check", **change).result["changes"] == expected
    changed = run_module(netns, tmp_path, **change)
    assert changed.result["changes"] == expected
    v0 = links(netns)["v0"]
    assert (v0.up, v0.mtu, v0.addresses) == (True, 1300, {"10.77.0.2/24"})
    assert routes(netns) == {
        "10.78.0.0/16 via 10.77.0.253 dev v0 metric 50",
        "0.0.0.0/0 dev v0 metric 0",
        "fd00:78::/48 via fd00:77::fe dev v0 metric 1024",  # IPv6 keeps routes to gone subnets
    }
    link_local = [a for a in changed.result["network"]["links"]["v0"]["addresses"] if "fe80" in a]
    assert link_local, "exclusive never removes the IPv6 link-local address"
    assert not run_module(netns, tmp_path, **change).changed


def test_check_mode_reports_but_changes_nothing(netns: str, tmp_path: Path) -> None:
    declared = {
        "interfaces": BOX["interfaces"] + VLAN_BOX["interfaces"],
        "routes": BOX["routes"] + VLAN_BOX["routes"],
        "vlans": VLAN_BOX["vlans"],
    }
    checked = run_module(netns, tmp_path, "--check", "--diff", **declared)
    assert checked.status == "CHANGED"
    assert checked.result["changes"] == [
        "create VLAN v0.10 (id 10 on v0)",
        "v0: mtu 1500 -> 1400",
        "v0: set up",
        "v0: add address 10.77.0.1/24; add address fd00:77::1/64",
        "v0.10: set up",
        "v0.10: add address 10.77.10.1/24",
        "add route 10.78.0.0/16 via 10.77.0.254 metric 50",
        "add route fd00:78::/48 via fd00:77::fe metric 1024",
        "add route 0.0.0.0/0 dev v0 metric 0",
        "add route 10.79.0.0/16 via 10.77.10.254 metric 0",
    ]
    assert checked.result["network"]["links"] == {
        "v0": {"state": "up", "mtu": 1400, "addresses": ["10.77.0.1/24", "fd00:77::1/64"]},
        "v0.10": {
            "state": "up", "mtu": 1500, "addresses": ["10.77.10.1/24"], "vlan_id": 10,
            "parent": "v0",
        },
    }  # fmt: skip
    assert "+link v0.10: vlan 10 on v0, up, mtu 1500" in checked.diff.splitlines()
    assert set(links(netns)) == {"lo", "v0", "v1"}
    v0 = links(netns)["v0"]
    assert (v0.up, v0.mtu, v0.addresses) == (False, 1500, set())
    assert routes(netns) == set()


def test_diff_mode_shows_before_and_after(netns: str, tmp_path: Path) -> None:
    configure_box(netns)
    changed = run_module(
        netns,
        tmp_path,
        "--diff",
        interfaces=[{"name": "v0", "mtu": 1300, "addresses": ["10.77.0.2/24"]}],
        routes=[{"dst": "10.78.0.0/16", "state": "absent"}],
    )
    lines = changed.diff.splitlines()
    assert f"--- before: network namespace {netns}" in lines
    assert f"+++ after: network namespace {netns}" in lines
    for line in (
        "-link v0: up, mtu 1400",
        "+link v0: up, mtu 1300",
        "+address v0 10.77.0.2/24",
        " address v0 10.77.0.1/24",
        "-route 10.78.0.0/16 via 10.77.0.254 dev v0 metric 50",
    ):
        assert line in lines, f"{line!r} not in the diff:\n{changed.diff}"

    # check mode and diff mode together: the diff of what would happen, nothing applied
    checked = run_module(
        netns, tmp_path, "--check", "--diff", interfaces=[{"name": "v0", "state": "down"}]
    )
    assert "-link v0: up, mtu 1300" in checked.diff.splitlines()
    assert "+link v0: down, mtu 1300" in checked.diff.splitlines()
    assert "-address v0 fd00:77::1/64" in checked.diff.splitlines()  # a link going down loses it
    assert links(netns)["v0"].up


def test_absent_removes_and_then_is_a_no_op(netns: str, tmp_path: Path) -> None:
    configure_box(netns)
    removal = {
        "interfaces": [{"name": "v0", "state": "down", "addresses": [], "exclusive": True}],
        "routes": [
            {"dst": "10.78.0.0/16", "state": "absent"},
            {"dst": "default", "dev": "v0", "state": "absent"},
            {"dst": "fd00:78::/48", "gateway": "fd00:77::fe", "metric": 1024, "state": "absent"},
        ],
        "vlans": [{"parent": "v0", "id": 10, "state": "absent"}],
    }
    removed = run_module(netns, tmp_path, **removal)
    assert removed.result["changes"][:3] == [
        "delete route 10.78.0.0/16 via 10.77.0.254 dev v0 metric 50",
        "delete route 0.0.0.0/0 dev v0 metric 0",
        "delete route fd00:78::/48 via fd00:77::fe dev v0 metric 1024",
    ]
    v0 = links(netns)["v0"]
    assert (v0.up, v0.addresses) == (False, set())
    assert routes(netns) == set()
    assert "v0.10" not in links(netns)
    assert not run_module(netns, tmp_path, **removal).changed


def test_a_route_to_another_metric_is_another_route(netns: str, tmp_path: Path) -> None:
    configure_box(netns)
    backup = {"dst": "10.78.0.0/16", "gateway": "10.77.0.253", "metric": 200}
    assert run_module(netns, tmp_path, routes=[backup]).result["changes"] == [
        "add route 10.78.0.0/16 via 10.77.0.253 metric 200"
    ]
    assert {
        "10.78.0.0/16 via 10.77.0.254 dev v0 metric 50",
        "10.78.0.0/16 via 10.77.0.253 dev v0 metric 200",
    } <= routes(netns)
    gone = run_module(netns, tmp_path, routes=[{"dst": "10.78.0.0/16", "state": "absent"}])
    assert len(gone.result["changes"]) == 2
    assert not any(r.startswith("10.78.") for r in routes(netns))


MISSING_NETNS = f"nmt-{uuid.uuid4().hex[:10]}-missing"
BAD_DECLARATIONS = {
    "missing namespace": (
        {"netns": MISSING_NETNS, "interfaces": [{"name": "lo", "state": "up"}]},
        f"network namespace '{MISSING_NETNS}' does not exist (/var/run/netns/{MISSING_NETNS})",
    ),
    "unknown interface": (
        {"interfaces": [{"name": "v0", "mtu": 1300}, {"name": "nope0", "state": "up"}]},
        "interface 'nope0' does not exist",
    ),
    "bad CIDR": (
        {"interfaces": [{"name": "v0", "addresses": ["10.77.0.300/24"]}]},
        "bad CIDR '10.77.0.300/24' for interface 'v0': "
        "'10.77.0.300/24' does not appear to be an IPv4 or IPv6 interface",
    ),
    "no prefix": (
        {"interfaces": [{"name": "v0", "addresses": ["10.77.0.1"]}]},
        "bad CIDR '10.77.0.1' for interface 'v0': a prefix length is required",
    ),
    "host bits": (
        {"routes": [{"dst": "10.78.0.1/16", "gateway": "10.77.0.254"}]},
        "bad route destination '10.78.0.1/16': 10.78.0.1/16 has host bits set",
    ),
    "gateway family": (
        {"routes": [{"dst": "10.78.0.0/16", "gateway": "fd00:77::fe"}]},
        "gateway fd00:77::fe and route 10.78.0.0/16 are of different IP versions",
    ),
    "route dev": (
        {"routes": [{"dst": "10.78.0.0/16", "dev": "nope0"}]},
        "route 10.78.0.0/16: interface 'nope0' does not exist",
    ),
    "route on a down link": (
        {"routes": [{"dst": "10.78.0.0/16", "dev": "v0"}]},
        "route 10.78.0.0/16: interface 'v0' is down (declare it with state: up)",
    ),
    "vlan parent": (
        {"vlans": [{"parent": "nope0", "id": 10}]},
        "VLAN nope0.10: parent interface 'nope0' does not exist",
    ),
    "vlan id": (
        {"vlans": [{"parent": "v0", "id": 5000}]},
        "VLAN id 5000 for 'v0.5000' is outside 1-4094",
    ),
    "vlan name clash": (
        {"vlans": [{"parent": "v0", "id": 10, "name": "v1"}]},
        "'v1' exists and is not a VLAN (veth)",
    ),
    "unknown option": (
        {"interfaces": [{"name": "v0", "speed": 1000}]},
        "Unsupported parameters for (appliance_network) module: interfaces.speed. Supported "
        "parameters include: addresses, exclusive, mtu, name, state.",
    ),
}  # fmt: skip


def test_bad_declarations_fail_with_a_specific_message_and_change_nothing(
    netns: str, tmp_path: Path
) -> None:
    """Every case is a task of one playbook (ignore_errors), one ansible start for them all."""
    results = tmp_path / "results.json"
    tasks = [
        {
            "name": case,
            "appliance_network": {"netns": netns, **args},
            "register": f"case_{n}",
            "ignore_errors": True,
        }
        for n, (case, (args, _)) in enumerate(BAD_DECLARATIONS.items())
    ]
    collected = ", ".join(f"case_{n}" for n in range(len(tasks)))
    tasks.append(
        {
            "name": "Collect the results",
            "ansible.builtin.copy": {
                "dest": str(results), "content": f"{{{{ [{collected}] | to_json }}}}"
            },
        }
    )  # fmt: skip
    playbook = tmp_path / "bad.yml"
    playbook.write_text(
        yaml.safe_dump([{"hosts": "localhost", "gather_facts": False, "tasks": tasks}])
    )
    done = subprocess.run(
        [
            str(ANSIBLE.with_name("ansible-playbook")), "-i", "localhost,", "-c", "local",
            "-M", str(LIBRARY), "-e", f"ansible_python_interpreter={sys.executable}", str(playbook),
        ],
        capture_output=True, text=True, env=ansible_env(tmp_path), cwd=tmp_path, timeout=120,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    created = MISSING_NETNS in ip("netns", "list").stdout
    if created:
        ip("netns", "del", MISSING_NETNS)
    assert not created, "asking for a missing namespace must not make it"
    outcomes = json.loads(results.read_text())
    for (case, (_, message)), outcome in zip(BAD_DECLARATIONS.items(), outcomes, strict=True):
        assert outcome.get("failed") is True, case
        assert outcome["msg"] == message, case
        assert outcome["changed"] is False, case
    v0 = links(netns)["v0"]
    assert (v0.up, v0.mtu, v0.addresses) == (False, 1500, set())  # the valid items neither
    assert routes(netns) == set()


def test_vlan_lifecycle(netns: str, tmp_path: Path) -> None:
    if not kernel_has_vlans(netns):
        pytest.skip("this kernel has no 802.1Q support (CONFIG_VLAN_8021Q)")
    configure_box(netns)
    assert run_module(netns, tmp_path, **VLAN_BOX).changed
    vlan = links(netns)["v0.10"]
    assert (vlan.kind, vlan.vlan_id, vlan.up) == ("vlan", 10, True)
    assert vlan.addresses == {"10.77.10.1/24"}
    assert "10.79.0.0/16 via 10.77.10.254 dev v0.10 metric 0" in routes(netns)
    assert not run_module(netns, tmp_path, **VLAN_BOX).changed

    moved = run_module(netns, tmp_path, vlans=[{"parent": "v0", "id": 11, "name": "v0.10"}])
    assert moved.result["changes"] == [
        "delete VLAN v0.10 (id 10 on v0)",
        "create VLAN v0.10 (id 11 on v0)",
    ]
    assert links(netns)["v0.10"].vlan_id == 11

    absent = {"vlans": [{"parent": "v0", "id": 11, "name": "v0.10", "state": "absent"}]}
    assert run_module(netns, tmp_path, **absent).result["changes"] == ["delete VLAN v0.10"]
    assert "v0.10" not in links(netns)
    assert not run_module(netns, tmp_path, **absent).changed


def test_vlan_on_a_kernel_without_8021q_fails_clearly(netns: str, tmp_path: Path) -> None:
    if kernel_has_vlans(netns):
        pytest.skip("this kernel has 802.1Q support (test_vlan_lifecycle runs instead)")
    configure_box(netns)
    with_removal = {**VLAN_BOX, "routes": [{"dst": "10.78.0.0/16", "state": "absent"}]}
    failed = run_module(netns, tmp_path, fails=True, **with_removal)
    assert failed.result["msg"].startswith(
        "failed to create VLAN v0.10 (id 10 on v0): the kernel has no 802.1Q VLAN support"
    )
    # VLANs are made first, so the refusal left everything else as it was
    assert (failed.result["changed"], failed.result["changes"]) == (False, [])
    assert "v0.10" not in links(netns)
    assert routes(netns) == BOX_ROUTES


# --- the documentation is the interface ------------------------------------------------------


def load_module():
    """The module file, imported for its docs and pure helpers (dataclasses need sys.modules)."""
    name = "appliance_network"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, LIBRARY / "appliance_network.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _doc_options(options: dict) -> dict:
    """DOCUMENTATION's options reduced to what an argument_spec says."""
    spec = {}
    for name, doc in options.items():
        entry = {"type": doc["type"]}
        for key in ("required", "choices", "elements"):
            if key in doc:
                entry[key] = doc[key]
        if "default" in doc:
            entry["default"] = doc["default"]
        if "suboptions" in doc:
            entry["options"] = _doc_options(doc["suboptions"])
        spec[name] = entry
    return spec


def test_documentation_matches_the_argument_spec_and_examples_are_valid() -> None:
    module = load_module()
    doc = yaml.safe_load(module.DOCUMENTATION)
    assert doc["module"] == "appliance_network"
    assert _doc_options(doc["options"]) == module.argument_spec()
    returned = yaml.safe_load(module.RETURN)
    assert set(returned) == {"changes", "network"}
    readme = (ROOT / "ansible" / "README.md").read_text()
    section = readme.split("## Network module (library/appliance_network.py)")[1].split("\n## ")[0]
    blocks = re.findall(r"```yaml\n(.*?)```", section, re.DOTALL)
    tasks = yaml.safe_load(module.EXAMPLES) + [t for b in blocks for t in yaml.safe_load(b)]
    assert len(tasks) == 4
    for task in tasks:
        _check_args(task["appliance_network"], module.argument_spec(), task["name"])


def _check_args(args: dict, spec: dict, where: str) -> None:
    """Every key of an example is an option, down through the list-of-dict suboptions."""
    assert set(args) <= set(spec), f"{where}: {set(args) - set(spec)}"
    for key, value in args.items():
        if "options" in spec[key]:
            for item in value:
                _check_args(item, spec[key]["options"], f"{where}: {key}")


def test_address_and_route_parsing_normalises() -> None:
    module = load_module()
    assert module.parse_cidr("FD00:0:0::0002/64", "x") == "fd00::2/64"
    assert module.parse_dst("default", "fd00::1") == "::/0"
    assert module.parse_dst("default", None) == "0.0.0.0/0"
    with pytest.raises(module.PlanError, match="different IP versions"):
        module.parse_gateway("fd00::1", "10.0.0.0/8")
    assert str(ipaddress.ip_interface(module.parse_cidr("10.0.0.1/8", "x"))) == "10.0.0.1/8"


def test_examples_pass_ansible_lint(tmp_path: Path) -> None:
    """The EXAMPLES, as a playbook, meet ansible-lint's strictest (production) profile."""
    playbook = tmp_path / "examples.yml"
    tasks = textwrap.indent(load_module().EXAMPLES.strip("\n"), "    ")
    playbook.write_text(
        f"---\n- name: Examples\n  hosts: all\n  gather_facts: false\n  tasks:\n{tasks}\n"
    )
    env = {
        **ansible_env(tmp_path),
        "ANSIBLE_LIBRARY": str(LIBRARY),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "NO_COLOR": "1",
    }
    lint = [str(ANSIBLE.with_name("ansible-lint")), "--offline", "--profile", "production"]
    done = subprocess.run(
        [*lint, "examples.yml"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
