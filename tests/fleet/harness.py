"""A fleet of test hosts on this machine: one network namespace per host, joined to the
controller by a veth pair made with pyroute2, each with its own sshd and its own appliance
root (a folder standing in for ``/``: ``opt/appliance``, ``etc/appliance``,
``var/lib/appliance``). Ansible reaches the hosts over real SSH at their namespace
addresses, exactly as it would reach branch boxes; nothing leaves the machine.

The hosts share this machine's filesystem and Python, so they play "plain Debian 12 hosts":
releases are built into each host's own root, and every process a host runs (sshd, the
appliance) lives in its namespace and is killed by namespace when the fleet is torn down.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml
from pyroute2 import IPRoute, NetNS, netns
from pyroute2.netlink.exceptions import NetlinkError

from tests.leakcheck import processes_pointing_into, register_link, register_netns, stop_processes

SSHD = Path("/usr/sbin/sshd")
SFTP_SERVER = Path("/usr/lib/openssh/sftp-server")


@dataclass(frozen=True)
class FleetHost:
    name: str
    netns: str
    veth: str
    address: str
    controller_address: str
    folder: Path

    @property
    def root(self) -> Path:
        """Stands in for ``/`` on this host: the roles put everything under it."""
        return self.folder / "root"


class Fleet:
    """``with Fleet(folder, 3) as fleet:`` - hosts up, inventory written, all gone after."""

    def __init__(self, folder: Path, count: int = 3, subnet: int | None = None,
                 group_vars: dict[str, object] | None = None) -> None:
        self.folder = folder
        self.group_vars = group_vars or {}
        tag = os.getpid() % 10000
        third = subnet if subnet is not None else 100 + os.getpid() % 100
        self.hosts = [
            FleetHost(name=f"box{index}", netns=f"fleet{tag}-{index}",
                     veth=f"fl{tag}h{index}", address=f"10.{third}.{index}.2",
                     controller_address=f"10.{third}.{index}.1",
                     folder=folder / f"box{index}")
            for index in range(1, count + 1)]
        self.key = folder / "controller_ed25519"
        self.inventory = folder / "inventory" / "hosts.yml"

    # -- lifecycle -------------------------------------------------------------------
    def __enter__(self) -> Fleet:
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def up(self) -> None:
        if not SSHD.is_file():
            raise RuntimeError("sshd is missing: apt-get install openssh-server "
                               "(make debian-test-deps does)")
        self.folder.mkdir(parents=True, exist_ok=True)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "controller",
                        "-f", str(self.key)], check=True)
        for host in self.hosts:
            self._make_link(host)
            self._start_sshd(host)
        for host in self.hosts:
            self._wait_for_ssh(host)
        self._write_inventory()

    def down(self) -> None:
        """Everything the fleet started goes, the boxes the playbooks started included: first
        through the box's own service command (a clean stop), then by the recorded process
        group, then whatever is left in the namespace; then the namespace and its link."""
        for host in self.hosts:
            with contextlib.suppress(Exception):
                self.stop_appliance(host)
            self.kill_processes(host)
            if host.netns in netns.listnetns():
                netns.remove(host.netns)
            with IPRoute() as ipr:  # usually gone with the namespace already
                if ipr.link_lookup(ifname=host.veth):
                    with contextlib.suppress(NetlinkError):
                        ipr.link("del", ifname=host.veth)
        # The controller side: playbook workers and SSH control masters (ControlPersist)
        # name this fleet's key and inventory, and outlive a playbook that was interrupted.
        stop_processes(processes_pointing_into(self.folder))

    # -- pieces ----------------------------------------------------------------------
    def _make_link(self, host: FleetHost) -> None:
        register_netns(host.netns)
        register_link(host.veth)
        netns.create(host.netns)
        peer = f"{host.veth}p"
        with IPRoute() as ipr:
            ipr.link("add", ifname=host.veth, kind="veth", peer=peer)
            outside = ipr.link_lookup(ifname=host.veth)[0]
            ipr.addr("add", index=outside, address=host.controller_address, prefixlen=24)
            ipr.link("set", index=outside, state="up")
            ipr.link("set", index=ipr.link_lookup(ifname=peer)[0], net_ns_fd=host.netns)
        with NetNS(host.netns) as ns:
            inside = ns.link_lookup(ifname=peer)[0]
            ns.link("set", index=inside, ifname="eth0")
            ns.addr("add", index=inside, address=host.address, prefixlen=24)
            ns.link("set", index=inside, state="up")
            ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
            ns.route("add", dst="default", gateway=host.controller_address)

    def _start_sshd(self, host: FleetHost) -> None:
        ssh = host.folder / "ssh"
        ssh.mkdir(parents=True, exist_ok=True)
        host.root.mkdir(parents=True, exist_ok=True)
        key = ssh / "ssh_host_ed25519_key"
        if not key.exists():  # kept across an outage, as a real host keeps its host key
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                           check=True)
        shutil.copyfile(f"{self.key}.pub", ssh / "authorized_keys")
        config = ssh / "sshd_config"
        config.write_text("\n".join([
            f"ListenAddress {host.address}", "Port 22", f"HostKey {key}",
            f"PidFile {ssh / 'sshd.pid'}", f"AuthorizedKeysFile {ssh / 'authorized_keys'}",
            "PermitRootLogin prohibit-password", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
            "MaxSessions 30", "MaxStartups 30:30:60",
            f"Subsystem sftp {SFTP_SERVER}", ""]))
        log = (host.folder / "sshd.log").open("ab")
        subprocess.Popen(["nsenter", f"--net=/run/netns/{host.netns}", str(SSHD), "-D", "-e",
                          "-f", str(config)], stdout=log, stderr=log,
                         stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()

    def _wait_for_ssh(self, host: FleetHost, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((host.address, 22), timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"sshd of {host.name} did not listen on {host.address}:22: "
                           f"{(host.folder / 'sshd.log').read_text()[-1000:]}")

    def _write_inventory(self) -> None:
        """A region with one branch per host, as ansible/inventory/example is laid out."""
        ssh_args = ("-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
                    "-o LogLevel=ERROR")
        hosts = {
            host.name: {
                "ansible_host": host.address,
                "ansible_user": "root",
                "ansible_ssh_private_key_file": str(self.key),
                "ansible_ssh_common_args": ssh_args,
                # the hosts share this machine's Python; the project's has pyroute2, which
                # Debian hosts get from python3-pyroute2
                "ansible_python_interpreter": sys.executable,
                "appliance_root": str(host.root),
                "appliance_listen": host.address,
                # the box's uplink and a route to the branch's device network, applied by
                # the appliance_network module (the harness leaves MTU 1500, no route)
                "appliance_network_interfaces": [
                    {"name": "eth0", "state": "up", "mtu": 1400,
                     "addresses": [f"{host.address}/24"]}],
                "appliance_network_routes": [
                    {"dst": "10.250.0.0/16", "gateway": host.controller_address}],
            } for host in self.hosts}
        branches = {f"branch_{host.name}": {"hosts": {host.name: hosts[host.name]}}
                    for host in self.hosts}
        inventory = {"all": {"children": {"appliances": {
            "vars": self.group_vars,
            "children": {"region_test": {"children": branches}}}}}}
        self.inventory.parent.mkdir(parents=True, exist_ok=True)
        self.inventory.write_text(yaml.safe_dump(inventory, sort_keys=False))

    def stop_appliance(self, host: FleetHost, timeout_s: float = 30.0) -> None:
        """``appliance service stop`` of the release the box runs, inside its namespace, then
        SIGKILL to the process group its pidfile names (a stop that did not finish)."""
        cli = host.root / "opt/appliance/current/venv/bin/appliance"
        config = host.root / "etc/appliance/appliance.toml"
        pidfile = host.root / "var/lib/appliance/run/appliance.pid"
        pid = None
        with contextlib.suppress(OSError, ValueError, KeyError):
            pid = int(json.loads(pidfile.read_text())["pid"])
        if cli.exists() and config.exists():
            with contextlib.suppress(subprocess.TimeoutExpired):
                subprocess.run(["nsenter", f"--net=/run/netns/{host.netns}", str(cli),
                                "service", "stop", "--config", str(config)],
                               capture_output=True, timeout=timeout_s, check=False)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)  # `service start` makes it a session leader

    # -- helpers for tests -----------------------------------------------------------
    def pids_in(self, host: FleetHost) -> list[int]:
        """Every process in the host's network namespace."""
        try:
            wanted = os.stat(f"/run/netns/{host.netns}").st_ino
        except FileNotFoundError:
            return []
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if os.stat(entry / "ns" / "net").st_ino == wanted:
                        found.append(int(entry.name))
                except OSError:
                    continue
        return found

    def kill_processes(self, host: FleetHost, grace_s: float = 10.0) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self.pids_in(host):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + grace_s
            while self.pids_in(host) and time.monotonic() < deadline:
                time.sleep(0.2)
            if not self.pids_in(host):
                return

    def sshd_pids(self, host: FleetHost) -> list[int]:
        found = []
        for pid in self.pids_in(host):
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/comm").read_text().strip() == "sshd":
                    found.append(pid)
        return found

    @contextlib.contextmanager
    def ssh_outage(self, host: FleetHost) -> Iterator[None]:
        """The box drops off the controller's network for the duration: sshd and every SSH
        session end (the controller's connections break at once, new ones are refused), while
        the appliance keeps running. sshd is back, listening, afterwards."""
        for pid in self.sshd_pids(host):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        try:
            yield
        finally:
            self._start_sshd(host)
            self._wait_for_ssh(host)

    def ssh(self, host: FleetHost, command: str, timeout_s: float = 60.0
            ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ssh", "-i", str(self.key), "-o", "StrictHostKeyChecking=no",
             "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
             f"root@{host.address}", command],
            capture_output=True, text=True, timeout=timeout_s, check=False)
