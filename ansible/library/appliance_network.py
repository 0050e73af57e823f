#!/usr/bin/python
# Copyright: the edge-appliance authors. Apache-2.0.
"""Ansible module: the appliance's links, addresses, VLANs and routes, declared and applied.

It talks netlink through pyroute2 (no `ip` parsing), so it runs on the box with the box's own
Python and needs nothing beyond the standard library, pyroute2 and Ansible's module_utils.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    PYROUTE2_IMPORT_ERROR = None
except ImportError:  # reported by fail_json once the module knows how to fail
    IPRoute = None
    NetlinkError = OSError
    PYROUTE2_IMPORT_ERROR = traceback.format_exc()

DOCUMENTATION = r"""
---
module: appliance_network
short_description: Declare the appliance's links, addresses, VLANs and routes (pyroute2)
description:
  - Brings interfaces, IP addresses, VLAN links and routes to a declared state over netlink
    with pyroute2, optionally inside a named network namespace.
  - Everything is validated before anything is changed, so a bad interface name or CIDR
    fails the task with nothing applied.
  - Order of work is VLAN creation, route removals, links (MTU, up/down, addresses), routes
    added or replaced, then VLAN removal. Routes are planned again once the links are done,
    so a declared route that the kernel dropped on the way (a link went down, its last IPv4
    address was removed) is put back.
  - Routes live in the main table. A route is identified by its destination and metric; a
    present route whose gateway or device differs is replaced in place.
version_added: "0.1.0"
author:
  - Edge appliance maintainers
requirements:
  - pyroute2 (0.7 or later) on the managed host
options:
  netns:
    description:
      - Name of a network namespace (as listed by C(ip netns)) or a path to its file.
      - The host's own namespace when omitted. The namespace must already exist.
    type: str
  interfaces:
    description:
      - Links to configure, by name. A link named here must exist, or be a VLAN declared
        present in O(vlans).
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Interface name, for example C(eth0) or C(eth0.10).
        type: str
        required: true
      state:
        description: Administrative state; left as it is when omitted.
        type: str
        choices: [up, down]
      mtu:
        description: MTU in bytes; left as it is when omitted.
        type: int
      addresses:
        description:
          - IPv4 or IPv6 addresses in CIDR form (C(10.0.0.2/24), C(fd00::2/64)).
          - Missing ones are added; others are kept unless O(interfaces[].exclusive=true).
          - Left as they are when omitted.
        type: list
        elements: str
      exclusive:
        description:
          - Remove addresses not listed in O(interfaces[].addresses). IPv6 link-local
            addresses (fe80::/10) are never removed.
        type: bool
        default: false
  vlans:
    description: 802.1Q VLAN links.
    type: list
    elements: dict
    default: []
    suboptions:
      parent:
        description: The link the VLAN rides on.
        type: str
        required: true
      id:
        description: VLAN id (1-4094).
        type: int
        required: true
      name:
        description:
          - Link name; C(<parent>.<id>) when omitted. At most 15 characters.
          - An existing VLAN of that name with another id or parent is deleted and made anew.
        type: str
      state:
        description: Whether the VLAN link exists.
        type: str
        choices: [present, absent]
        default: present
  routes:
    description: Routes in the main table.
    type: list
    elements: dict
    default: []
    suboptions:
      dst:
        description: Destination network in CIDR form, or C(default).
        type: str
        required: true
      gateway:
        description: Next hop address. O(routes[].gateway) or O(routes[].dev) is required
          for a present route.
        type: str
      dev:
        description: Outgoing interface.
        type: str
      metric:
        description:
          - Route priority. When omitted, the kernel's default (0 for IPv4, 1024 for IPv6)
            for a present route; any metric for an absent one.
        type: int
      state:
        description: Whether the route exists.
        type: str
        choices: [present, absent]
        default: present
attributes:
  check_mode:
    description: Reports what would change and changes nothing.
    support: full
  diff_mode:
    description: Before and after as text, one line per link setting, address and route.
    support: full
  platform:
    description: Linux hosts (netlink).
    platforms: linux
notes:
  - Only the links named in O(interfaces) and O(vlans) and the routes to the destinations in
    O(routes) are read, shown in diffs and returned.
"""

EXAMPLES = r"""
- name: Uplink with a management VLAN and a default route
  appliance_network:
    interfaces:
      - name: eth0
        state: up
        mtu: 1500
        addresses: [192.0.2.10/24]
        exclusive: true
      - name: eth0.20
        state: up
        addresses: [198.51.100.10/24, "fd00:20::10/64"]
    vlans:
      - parent: eth0
        id: 20
    routes:
      - dst: default
        gateway: 192.0.2.1
      - dst: 203.0.113.0/24
        gateway: 198.51.100.1
        dev: eth0.20
        metric: 100

- name: Retire the VLAN and its route
  appliance_network:
    routes:
      - dst: 203.0.113.0/24
        state: absent
    vlans:
      - parent: eth0
        id: 20
        state: absent

- name: The same, inside a network namespace (test fleet)
  appliance_network:
    netns: box1
    interfaces:
      - name: veth-box1
        state: up
        addresses: [192.0.2.11/24]
"""

RETURN = r"""
changes:
  description: What was changed (or would be, in check mode), one line each, in order.
  returned: always
  type: list
  elements: str
  sample: ["create VLAN eth0.20 (id 20 on eth0)", "eth0.20: add address 198.51.100.10/24"]
network:
  description:
    - The declared links and routes after the run (as predicted, in check mode).
    - C(links) maps each link name to its state, mtu, addresses and, for VLANs, id and
      parent; a link that does not exist is left out. C(routes) holds C(ip route)-like lines.
  returned: always
  type: dict
  sample:
    links:
      eth0.20: {state: up, mtu: 1500, addresses: [198.51.100.10/24], vlan_id: 20,
                parent: eth0}
    routes: ["203.0.113.0/24 via 198.51.100.1 dev eth0.20 metric 100"]
"""

MAIN_TABLE = 254
RTN_UNICAST = 1
RTPROT_STATIC = 4
SCOPE_UNIVERSE = 0
SCOPE_LINK = 253
SCOPE_NOWHERE = 255
IFF_UP = 1
IFNAMSIZ = 15
DEFAULT_METRIC = {socket.AF_INET: 0, socket.AF_INET6: 1024}


class PlanError(Exception):
    """A declaration that cannot be carried out, said in the operator's terms.

    Raised while planning it fails the task before anything is changed; raised by a step
    (a link gone meanwhile, a kernel without VLANs) it becomes an ApplyError.
    """


# --- the model: what is there, and what should be -------------------------------------------


@dataclass
class Link:
    """One link as far as this module cares; ``index`` is None for a link yet to be made."""

    name: str
    index: int | None
    up: bool
    mtu: int | None
    addresses: list[str] = field(default_factory=list)
    kind: str | None = None
    vlan_id: int | None = None
    parent: str | None = None


@dataclass(frozen=True)
class Route:
    """A main-table unicast route; (dst, metric) is its identity, as in the kernel."""

    dst: str
    metric: int
    gateway: str | None = None
    dev: str | None = None

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return ipaddress.ip_network(self.dst)

    @property
    def family(self) -> int:
        return socket.AF_INET if self.network.version == 4 else socket.AF_INET6

    def text(self) -> str:
        words = [self.dst]
        if self.gateway:
            words += ["via", self.gateway]
        if self.dev:
            words += ["dev", self.dev]
        return " ".join([*words, "metric", str(self.metric)])


@dataclass
class State:
    links: dict[str, Link]
    routes: list[Route]


@dataclass
class Change:
    """A planned step: what a person reads, and how to carry it out."""

    text: str
    phase: int
    apply: Callable[[IPRoute], None]


# Phases in which planned steps run: VLANs are made first (the step a kernel most often
# refuses, so a refusal leaves the rest untouched) and exist before their settings; routes
# go before the addresses they depend on go away, and are added once links are up.
VLAN_ADD = 0
ROUTE_DEL = 1
LINK = 2
ROUTE_ADD = 3
VLAN_DEL = 4


# --- reading the kernel's state ---------------------------------------------------------------


def open_iproute(netns: str | None) -> IPRoute:
    """IPRoute in the host's or a named namespace; never creates the namespace by accident."""
    if not netns:
        return IPRoute()
    path = netns if "/" in netns else os.path.join("/var/run/netns", netns)
    if not os.path.exists(path):
        raise PlanError(f"network namespace '{netns}' does not exist ({path})")
    try:
        return IPRoute(netns=netns, flags=0)
    except TypeError:  # pyroute2 < 0.9: namespaces through the NetNS class
        from pyroute2 import NetNS

        return NetNS(netns, flags=0)


def _nested(msg, *names: str):
    """An attribute nested in netlink attributes, or None; works on pyroute2 0.7 to 0.9."""
    for name in names:
        if msg is None:
            return None
        msg = msg.get_attr(name)
    return msg


def read_links(ipr: IPRoute) -> dict[str, Link]:
    """Every link with its addresses; names are what the playbook speaks in."""
    by_index: dict[int, Link] = {}
    for msg in ipr.get_links():
        by_index[msg["index"]] = Link(
            name=msg.get_attr("IFLA_IFNAME"),
            index=msg["index"],
            up=bool(msg["flags"] & IFF_UP),
            mtu=msg.get_attr("IFLA_MTU"),
            kind=_nested(msg, "IFLA_LINKINFO", "IFLA_INFO_KIND"),
            vlan_id=_nested(msg, "IFLA_LINKINFO", "IFLA_INFO_DATA", "IFLA_VLAN_ID"),
            parent=msg.get_attr("IFLA_LINK"),
        )
    for link in by_index.values():  # IFLA_LINK is an index; keep the parent's name
        parent = by_index.get(link.parent) if isinstance(link.parent, int) else None
        link.parent = parent.name if parent and link.kind == "vlan" else None
    for msg in ipr.get_addr():
        link = by_index.get(msg["index"])
        local = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
        if link is not None and local:
            link.addresses.append(str(ipaddress.ip_interface(f"{local}/{msg['prefixlen']}")))
    return {link.name: link for link in by_index.values()}


def read_routes(ipr: IPRoute, links: dict[str, Link], dsts: set[str]) -> list[Route]:
    """Main-table unicast routes to the destinations the task speaks of."""
    names = {link.index: name for name, link in links.items()}
    routes = []
    for family in (socket.AF_INET, socket.AF_INET6):
        for msg in ipr.get_routes(family=family):
            table = msg.get_attr("RTA_TABLE") or msg["table"]
            if table != MAIN_TABLE or msg["type"] != RTN_UNICAST:
                continue
            any_addr = "0.0.0.0" if family == socket.AF_INET else "::"
            dst = f"{msg.get_attr('RTA_DST') or any_addr}/{msg['dst_len']}"
            dst = str(ipaddress.ip_network(dst, strict=False))
            if dst not in dsts:
                continue
            gateway = msg.get_attr("RTA_GATEWAY")
            metric = msg.get_attr("RTA_PRIORITY")
            routes.append(
                Route(
                    dst=dst,
                    metric=DEFAULT_METRIC[family] if metric is None else metric,
                    gateway=str(ipaddress.ip_address(gateway)) if gateway else None,
                    dev=names.get(msg.get_attr("RTA_OIF")),
                )
            )
    return routes


def read_state(ipr: IPRoute, dsts: set[str]) -> State:
    links = read_links(ipr)
    return State(links=links, routes=read_routes(ipr, links, dsts))


# --- checking the declaration ----------------------------------------------------------------


def parse_cidr(value: str, where: str) -> str:
    """An address with its prefix, normalised ('fd00::0002/64' → 'fd00::2/64')."""
    if "/" not in value:
        raise PlanError(f"bad CIDR '{value}' for {where}: a prefix length is required")
    try:
        return str(ipaddress.ip_interface(value))
    except ValueError as err:
        raise PlanError(f"bad CIDR '{value}' for {where}: {err}") from None


def parse_dst(value: str, gateway: str | None) -> str:
    """A route destination: a network without host bits, or 'default' (family of the gateway)."""
    if value == "default":
        return "::/0" if gateway and ":" in gateway else "0.0.0.0/0"
    try:
        return str(ipaddress.ip_network(value))
    except ValueError as err:
        raise PlanError(f"bad route destination '{value}': {err}") from None


def parse_gateway(value: str, dst: str) -> str:
    try:
        gateway = ipaddress.ip_address(value)
    except ValueError as err:
        raise PlanError(f"bad gateway '{value}' for route {dst}: {err}") from None
    if gateway.version != ipaddress.ip_network(dst).version:
        raise PlanError(f"gateway {gateway} and route {dst} are of different IP versions")
    return str(gateway)


def vlan_name(spec: dict) -> str:
    name = spec["name"] or f"{spec['parent']}.{spec['id']}"
    if len(name) > IFNAMSIZ:
        raise PlanError(f"VLAN name '{name}' is longer than {IFNAMSIZ} characters; set name")
    return name


def require_link(links: dict[str, Link], name: str, context: str = "") -> Link:
    if name not in links:
        raise PlanError(f"{context}interface '{name}' does not exist")
    return links[name]


# --- planning: a new State and the steps that lead there --------------------------------------


def link_index(ipr: IPRoute, name: str) -> int:
    """The index of a link at apply time (VLANs made in this run have none before)."""
    found = ipr.link_lookup(ifname=name)
    if not found:
        raise PlanError(f"interface '{name}' vanished while being configured")
    return found[0]


def plan_vlans(state: State, specs: list[dict], changes: list[Change]) -> None:
    """VLANs made or removed; one of the same name but another id or parent is made anew."""
    for spec in specs:
        name, vid, parent = vlan_name(spec), spec["id"], spec["parent"]
        if not 1 <= vid <= 4094:
            raise PlanError(f"VLAN id {vid} for '{name}' is outside 1-4094")
        current = state.links.get(name)
        if current is not None and current.kind != "vlan":
            raise PlanError(f"'{name}' exists and is not a VLAN ({current.kind or 'device'})")
        if spec["state"] == "absent":
            if current is not None:
                del state.links[name]
                state.routes = [r for r in state.routes if r.dev != name]
                changes.append(Change(f"delete VLAN {name}", VLAN_DEL, _delete_link(name)))
            continue
        parent_link = require_link(state.links, parent, f"VLAN {name}: parent ")
        if current is not None and (current.vlan_id, current.parent) == (vid, parent):
            continue
        if current is not None:
            changes.append(
                Change(
                    f"delete VLAN {name} (id {current.vlan_id} on {current.parent})",
                    VLAN_ADD,
                    _delete_link(name),
                )
            )
            state.routes = [r for r in state.routes if r.dev != name]
        state.links[name] = Link(name, None, False, parent_link.mtu, [], "vlan", vid, parent)
        changes.append(
            Change(
                f"create VLAN {name} (id {vid} on {parent})", VLAN_ADD, _add_vlan(name, parent, vid)
            )
        )


def plan_interface(state: State, spec: dict, changes: list[Change]) -> None:
    """MTU, up/down and addresses of one link, each only when it differs.

    Up/down goes before the addresses because taking a link down flushes its IPv6 addresses
    (keep_addr_on_down=0); addresses added afterwards stay. The model follows the kernel:
    a link going down loses its routes and IPv6 addresses, a link losing its last IPv4
    address loses its IPv4 routes.
    """
    name = spec["name"]
    link = require_link(state.links, name)
    if spec["mtu"] is not None:
        if spec["mtu"] <= 0:
            raise PlanError(f"mtu {spec['mtu']} for interface '{name}' is not positive")
        if link.mtu != spec["mtu"]:
            text = f"{name}: mtu {link.mtu} -> {spec['mtu']}"
            changes.append(Change(text, LINK, _set_mtu(name, spec["mtu"])))
            link.mtu = spec["mtu"]
    if spec["state"] is not None and link.up != (spec["state"] == "up"):
        changes.append(
            Change(f"{name}: set {spec['state']}", LINK, _set_state(name, spec["state"]))
        )
        link.up = spec["state"] == "up"
        if not link.up:
            link.addresses = [a for a in link.addresses if ":" not in a]
            state.routes = [r for r in state.routes if r.dev != name]
    if spec["addresses"] is not None:
        wanted = [parse_cidr(a, f"interface '{name}'") for a in spec["addresses"]]
        add = [a for a in dict.fromkeys(wanted) if a not in link.addresses]
        remove = []
        if spec["exclusive"]:
            remove = [a for a in link.addresses if a not in wanted and not _is_link_local(a)]
        if add or remove:
            text = "; ".join(
                [f"remove address {a}" for a in remove] + [f"add address {a}" for a in add]
            )
            changes.append(Change(f"{name}: {text}", LINK, _set_addresses(name, wanted, remove)))
            kept = [a for a in link.addresses if a not in remove]
            if any(":" not in a for a in remove) and not any(":" not in a for a in kept):
                state.routes = [
                    r for r in state.routes if not (r.dev == name and r.family == socket.AF_INET)
                ]
            link.addresses = kept + add


def desired_route(spec: dict, links: dict[str, Link]) -> Route:
    dst = parse_dst(spec["dst"], spec["gateway"])
    gateway = parse_gateway(spec["gateway"], dst) if spec["gateway"] else None
    if spec["dev"] and spec["state"] == "present":  # an absent route may name a gone link
        require_link(links, spec["dev"], f"route {dst}: ")
    if spec["metric"] is not None and spec["metric"] < 0:
        raise PlanError(f"metric {spec['metric']} for route {dst} is negative")
    family = socket.AF_INET if ipaddress.ip_network(dst).version == 4 else socket.AF_INET6
    metric = DEFAULT_METRIC[family] if spec["metric"] is None else spec["metric"]
    return Route(dst=dst, metric=metric, gateway=gateway, dev=spec["dev"])


def plan_routes(state: State, specs: list[dict], changes: list[Change]) -> None:
    """Absent routes match on what is given; a present one replaces its (dst, metric) twin."""
    for spec in specs:
        want = desired_route(spec, state.links)
        if spec["state"] == "absent":
            for route in [r for r in state.routes if _matches(r, want, spec)]:
                state.routes.remove(route)
                changes.append(Change(f"delete route {route.text()}", ROUTE_DEL, _del_route(route)))
            continue
        if not (want.gateway or want.dev):
            raise PlanError(f"route {want.dst} needs a gateway or a dev")
        if want.dev and not state.links[want.dev].up:
            raise PlanError(
                f"route {want.dst}: interface '{want.dev}' is down (declare it with state: up)"
            )
        twin = next((r for r in state.routes if (r.dst, r.metric) == (want.dst, want.metric)), None)
        if twin is not None and twin.gateway == want.gateway and want.dev in (None, twin.dev):
            continue
        if twin is not None:
            state.routes.remove(twin)
        state.routes.append(want)
        verb = "replace route" if twin else "add route"
        changes.append(Change(f"{verb} {want.text()}", ROUTE_ADD, _replace_route(want)))


def _matches(route: Route, want: Route, spec: dict) -> bool:
    return (
        route.dst == want.dst
        and (spec["metric"] is None or route.metric == want.metric)
        and (want.gateway is None or route.gateway == want.gateway)
        and (want.dev is None or route.dev == want.dev)
    )


def _is_link_local(cidr: str) -> bool:
    return ipaddress.ip_interface(cidr).ip.is_link_local and ":" in cidr


def plan(state: State, params: dict) -> list[Change]:
    """Mutates ``state`` into the declared one and returns the steps, in the order to run."""
    names = [spec["name"] for spec in params["interfaces"]]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise PlanError(f"interfaces listed more than once: {', '.join(duplicated)}")
    changes: list[Change] = []
    # Absent routes first, so that they are named as deleted even when a link going down
    # would take them anyway.
    plan_routes(state, [s for s in params["routes"] if s["state"] == "absent"], changes)
    plan_vlans(state, [s for s in params["vlans"] if s["state"] == "present"], changes)
    absent = {vlan_name(s) for s in params["vlans"] if s["state"] == "absent"}
    for spec in params["interfaces"]:
        if spec["name"] in absent:
            raise PlanError(f"interface '{spec['name']}' is configured but its VLAN is absent")
        plan_interface(state, spec, changes)
    plan_routes(state, [s for s in params["routes"] if s["state"] == "present"], changes)
    plan_vlans(state, [s for s in params["vlans"] if s["state"] == "absent"], changes)
    return sorted(changes, key=lambda change: change.phase)  # stable: keeps order in a phase


# --- carrying it out -------------------------------------------------------------------------


def _delete_link(name: str) -> Callable[[IPRoute], None]:
    return lambda ipr: ipr.link("del", index=link_index(ipr, name))


def _add_vlan(name: str, parent: str, vid: int) -> Callable[[IPRoute], None]:
    def apply(ipr: IPRoute) -> None:
        try:
            ipr.link("add", ifname=name, kind="vlan", link=link_index(ipr, parent), vlan_id=vid)
        except NetlinkError as err:
            if err.code != errno.EOPNOTSUPP:
                raise
            # The kernel knows no "vlan" link kind: say so, rather than a bare errno 95.
            raise PlanError(
                f"the kernel has no 802.1Q VLAN support (CONFIG_VLAN_8021Q, module 8021q): {err}"
            ) from None

    return apply


def _set_mtu(name: str, mtu: int) -> Callable[[IPRoute], None]:
    return lambda ipr: ipr.link("set", index=link_index(ipr, name), mtu=mtu)


def _set_state(name: str, state: str) -> Callable[[IPRoute], None]:
    return lambda ipr: ipr.link("set", index=link_index(ipr, name), state=state)


def _set_addresses(name: str, wanted: list[str], remove: list[str]) -> Callable[[IPRoute], None]:
    """Removes first, then adds whatever is missing once the kernel has settled.

    Removing an IPv4 primary address also drops its secondaries (unless promote_secondaries
    is set), so what to add is decided after the removals, from the kernel's own list.
    """

    def apply(ipr: IPRoute) -> None:
        index = link_index(ipr, name)
        for cidr in remove:
            _addr(ipr, "del", index, cidr)
        present = read_links(ipr)[name].addresses
        for cidr in dict.fromkeys(wanted):
            if cidr not in present:
                _addr(ipr, "add", index, cidr)

    return apply


def _addr(ipr: IPRoute, command: str, index: int, cidr: str) -> None:
    iface = ipaddress.ip_interface(cidr)
    family = socket.AF_INET if iface.version == 4 else socket.AF_INET6
    ipr.addr(
        command,
        index=index,
        address=str(iface.ip),
        prefixlen=iface.network.prefixlen,
        family=family,
    )


def _route_args(ipr: IPRoute, route: Route) -> dict:
    net = route.network
    args = {
        "family": route.family,
        "dst": str(net.network_address),
        "dst_len": net.prefixlen,
        "table": MAIN_TABLE,
        "priority": route.metric,
    }
    if route.gateway:
        args["gateway"] = route.gateway
    if route.dev:
        args["oif"] = link_index(ipr, route.dev)
    return args


def _replace_route(route: Route) -> Callable[[IPRoute], None]:
    def apply(ipr: IPRoute) -> None:
        scope = SCOPE_UNIVERSE if route.gateway else SCOPE_LINK
        ipr.route(
            "replace", proto=RTPROT_STATIC, scope=scope, type=RTN_UNICAST, **_route_args(ipr, route)
        )

    return apply


def _del_route(route: Route) -> Callable[[IPRoute], None]:
    def apply(ipr: IPRoute) -> None:
        # scope "nowhere" matches a route of any scope (a request's default, universe, would
        # miss a device route, which has link scope); iproute2 deletes the same way.
        try:
            ipr.route("del", scope=SCOPE_NOWHERE, **_route_args(ipr, route))
        except NetlinkError as err:
            if err.code != errno.ESRCH:  # already gone (a recreated VLAN took it): as wanted
                raise

    return apply


# --- what the task returns -------------------------------------------------------------------


def describe(state: State, names: list[str]) -> dict:
    """The declared links and routes as plain data (the module's ``network`` return value)."""
    links = {}
    for name in names:
        link = state.links.get(name)
        if link is None:
            continue
        entry = {
            "state": "up" if link.up else "down",
            "mtu": link.mtu,
            "addresses": sorted(link.addresses, key=_address_order),
        }
        if link.kind == "vlan":
            entry.update(vlan_id=link.vlan_id, parent=link.parent)
        links[name] = entry
    return {"links": links, "routes": sorted(r.text() for r in state.routes)}


def render(network: dict) -> str:
    """One line per setting, address and route, so a diff points at exactly what moved."""
    lines = []
    for name, link in network["links"].items():
        vlan = f"vlan {link['vlan_id']} on {link['parent']}, " if "vlan_id" in link else ""
        lines.append(f"link {name}: {vlan}{link['state']}, mtu {link['mtu']}")
        lines += [f"address {name} {address}" for address in link["addresses"]]
    lines += [f"route {route}" for route in network["routes"]]
    return "\n".join(lines) + "\n"


def _address_order(cidr: str) -> tuple:
    iface = ipaddress.ip_interface(cidr)
    return (iface.version, iface.ip, iface.network.prefixlen)


def argument_spec() -> dict:
    present_absent = {"type": "str", "choices": ["present", "absent"], "default": "present"}
    return {
        "netns": {"type": "str"},
        "interfaces": {
            "type": "list",
            "elements": "dict",
            "default": [],
            "options": {
                "name": {"type": "str", "required": True},
                "state": {"type": "str", "choices": ["up", "down"]},
                "mtu": {"type": "int"},
                "addresses": {"type": "list", "elements": "str"},
                "exclusive": {"type": "bool", "default": False},
            },
        },
        "vlans": {
            "type": "list",
            "elements": "dict",
            "default": [],
            "options": {
                "parent": {"type": "str", "required": True},
                "id": {"type": "int", "required": True},
                "name": {"type": "str"},
                "state": dict(present_absent),
            },
        },
        "routes": {
            "type": "list",
            "elements": "dict",
            "default": [],
            "options": {
                "dst": {"type": "str", "required": True},
                "gateway": {"type": "str"},
                "dev": {"type": "str"},
                "metric": {"type": "int"},
                "state": dict(present_absent),
            },
        },
    }


class ApplyError(Exception):
    """A step the kernel refused; ``done`` is what had been changed before it."""

    def __init__(self, message: str, done: list[str]) -> None:
        super().__init__(message)
        self.done = done


def apply(ipr: IPRoute, changes: list[Change], params: dict, dsts: set[str]) -> list[str]:
    """Runs the planned steps; routes are planned again once the links are settled.

    Taking a link down or removing its last IPv4 address makes the kernel drop routes through
    it, so a route that was there when planning may be gone now: it is put back.
    """
    done: list[str] = []

    def run_step(change: Change) -> None:
        try:
            change.apply(ipr)
        except (NetlinkError, OSError, PlanError) as err:
            raise ApplyError(f"failed to {change.text}: {err}", done) from None
        done.append(change.text)

    for change in changes:
        if change.phase < ROUTE_ADD:
            run_step(change)
    route_changes: list[Change] = []
    try:
        plan_routes(read_state(ipr, dsts), params["routes"], route_changes)
    except PlanError as err:
        raise ApplyError(str(err), done) from None
    for change in sorted(route_changes, key=lambda c: c.phase):
        run_step(change)
    for change in changes:
        if change.phase > ROUTE_ADD:
            run_step(change)
    return done


def run(module: AnsibleModule) -> dict:
    """Plan against the kernel's state, apply unless in check mode, and report."""
    params = module.params
    names = [s["name"] for s in params["interfaces"]]
    names += [vlan_name(s) for s in params["vlans"] if vlan_name(s) not in names]
    dsts = {parse_dst(r["dst"], r["gateway"]) for r in params["routes"]}
    ipr = open_iproute(params["netns"])
    try:
        state = read_state(ipr, dsts)
        before = describe(state, names)
        planned = plan(state, params)  # ``state`` becomes the prediction; nothing applied yet
        if module.check_mode:
            changes = [change.text for change in planned]
        else:
            changes = apply(ipr, planned, params, dsts)
            state = read_state(ipr, dsts)
        after = describe(state, names)
    finally:
        ipr.close()
    result = {"changed": bool(changes), "changes": changes, "network": after}
    if module._diff:
        header = f"network namespace {params['netns']}" if params["netns"] else "network"
        result["diff"] = {
            "before": render(before),
            "after": render(after),
            "before_header": header,
            "after_header": header,
        }
    return result


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    if PYROUTE2_IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib("pyroute2"), exception=PYROUTE2_IMPORT_ERROR)
    try:
        module.exit_json(**run(module))
    except PlanError as err:
        module.fail_json(msg=str(err), changed=False, changes=[])
    except ApplyError as err:
        module.fail_json(msg=str(err), changed=bool(err.done), changes=err.done)


if __name__ == "__main__":
    main()
