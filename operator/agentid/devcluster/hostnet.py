"""The host state a local node changes, set up and taken down exactly: the bridge, its routes, a forward guard,
iptables chains left by kubelet and kube-proxy, kernel settings, cgroups and mounts.

Called by ``agentid.devcluster.node``. Network safety comes first: the pod and service ranges are routed to the
bridge *before* any component starts, so a ClusterIP packet can never follow the host's default route, and a guard
in FORWARD drops anything that would leave the bridge for another interface.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

GUARD_CHAIN = "AGENTID-NODE-GUARD"
# iptables chains that kubelet, kube-proxy and the CNI plugins create; none exists on a host without a node.
OWNED_CHAIN = re.compile(r"^(KUBE-|CNI-|AGENTID-)")
TABLES = ("filter", "nat", "mangle", "raw")

# Kernel settings kubelet and kube-proxy write on start (kubelet's "kernel tunables", kube-proxy's conntrack
# sizing): recorded before the node starts, written back after it stops.
SYSCTLS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/route_localnet",
    "net/netfilter/nf_conntrack_max",
    "net/netfilter/nf_conntrack_tcp_timeout_established",
    "net/netfilter/nf_conntrack_tcp_timeout_close_wait",
    "net/bridge/bridge-nf-call-iptables",
    "net/bridge/bridge-nf-call-ip6tables",
)
CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_NAMES = ("kubepods", "k8s.io")  # what kubelet (cgroupfs driver) and containerd create at the top


class HostCommandError(RuntimeError):
    """A host networking command failed; the message has its output."""


@dataclass(frozen=True)
class Network:
    """The node's addresses: one bridge, a pod range on it, and the cluster's service range routed to it."""

    bridge: str
    pod_cidr: str
    gateway: str
    service_cidr: str

    @property
    def gateway_cidr(self) -> str:
        return f"{self.gateway}/{self.pod_cidr.split('/')[1]}"


def run(*argv: str, check: bool = True, input_text: str | None = None) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, input=input_text, check=False, timeout=60)
    if check and result.returncode != 0:
        raise HostCommandError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout


def run_ok(*argv: str) -> bool:
    return subprocess.run(argv, capture_output=True, check=False, timeout=60).returncode == 0


# -- the bridge and its routes -----------------------------------------------------------------------------------


def create_bridge(network: Network) -> None:
    """The bridge with the gateway address, the service range routed onto it, forwarding only from it."""
    run("ip", "link", "add", network.bridge, "type", "bridge")
    run("ip", "addr", "add", network.gateway_cidr, "dev", network.bridge)
    run("ip", "link", "set", network.bridge, "up")
    run("ip", "route", "replace", network.service_cidr, "dev", network.bridge, "src", network.gateway)
    # Per-interface forwarding: the host routes packets that come in on the bridge (pod -> ClusterIP -> pod) and
    # nothing else; the global ip_forward stays as it was.
    Path(f"/proc/sys/net/ipv4/conf/{network.bridge}/forwarding").write_text("1")
    _install_guard(network)


def _install_guard(network: Network) -> None:
    """FORWARD drops whatever comes from the bridge and would leave through another interface."""
    run("iptables", "-w", "-N", GUARD_CHAIN)
    run("iptables", "-w", "-A", GUARD_CHAIN, "-i", network.bridge, "!", "-o", network.bridge, "-j", "DROP")
    run("iptables", "-w", "-I", "FORWARD", "1", "-j", GUARD_CHAIN)


def delete_bridge(bridge: str) -> None:
    """The bridge goes, and with it its address, the routes through it and its per-interface settings."""
    if Path(f"/sys/class/net/{bridge}").exists():
        run("ip", "link", "del", bridge)


def route_device(address: str) -> str | None:
    """The interface ``ip route get`` picks for ``address`` (None when there is no route)."""
    output = run("ip", "-o", "route", "get", address, check=False)
    match = re.search(r"\bdev (\S+)", output)
    return match.group(1) if match else None


def routes_via(bridge: str) -> list[str]:
    return [line for line in run("ip", "route", "show").splitlines() if f"dev {bridge} " in f"{line} "]


# -- iptables ------------------------------------------------------------------------------------------------------


def owned_chains(binary: str = "iptables") -> dict[str, list[str]]:
    """Chains kubelet, kube-proxy, CNI and the guard left, per table (empty when the host is clean)."""
    found: dict[str, list[str]] = {}
    save = f"{binary}-save"
    for table in TABLES:
        output = run(save, "-t", table, check=False)
        chains = [line[1:].split()[0] for line in output.splitlines() if line.startswith(":")]
        owned = [chain for chain in chains if OWNED_CHAIN.match(chain)]
        if owned:
            found[table] = owned
    return found


def remove_owned_chains() -> None:
    """Delete every rule that jumps into an owned chain, then flush and delete those chains (IPv4 and IPv6)."""
    for binary in ("iptables", "ip6tables"):
        for table, chains in owned_chains(binary).items():
            for rule in run(f"{binary}-save", "-t", table, check=False).splitlines():
                parts = shlex.split(rule)
                if len(parts) < 2 or parts[0] != "-A" or OWNED_CHAIN.match(parts[1]):
                    continue
                if any(flag in ("-j", "-g") and OWNED_CHAIN.match(target) for flag, target in pairwise(parts)):
                    run(binary, "-w", "-t", table, "-D", parts[1], *parts[2:], check=False)
            for chain in chains:
                run(binary, "-w", "-t", table, "-F", chain, check=False)
            for chain in chains:
                run(binary, "-w", "-t", table, "-X", chain, check=False)


def nft_tables() -> list[str]:
    """Every nftables table ("family name"); iptables-nft, kubelet and kube-proxy create theirs on first use."""
    return sorted(f"{t['family']} {t['name']}" for t in _nft_objects("table"))


def remove_new_empty_tables(before: Iterable[str]) -> None:
    """Delete the tables that were not there before the node and hold no rule any more (after the chains went)."""
    with_rules = {f"{rule['family']} {rule['table']}" for rule in _nft_objects("rule")}
    for table in set(nft_tables()) - set(before) - with_rules:
        run("nft", "delete", "table", *table.split(), check=False)


def _nft_objects(kind: str) -> list[dict[str, str]]:
    if shutil.which("nft") is None:
        return []
    try:
        ruleset = json.loads(run("nft", "-j", "list", "ruleset", check=False) or "{}")
    except ValueError:
        return []
    return [item[kind] for item in ruleset.get("nftables", []) if kind in item]


# -- kernel settings -----------------------------------------------------------------------------------------------


def read_sysctls(names: Iterable[str] = SYSCTLS) -> dict[str, str]:
    values = {}
    for name in names:
        with contextlib.suppress(OSError):
            values[name] = Path("/proc/sys", name).read_text().strip()
    return values


def restore_sysctls(values: Mapping[str, str]) -> None:
    for name, value in values.items():
        path = Path("/proc/sys", name)
        with contextlib.suppress(OSError):
            if path.read_text().strip() != value:
                path.write_text(value)


# -- processes, cgroups, mounts ------------------------------------------------------------------------------------


def owned_cgroups() -> list[Path]:
    """Every cgroup folder kubelet or containerd made, deepest first (cgroup v1 hierarchies and v2)."""
    found: list[Path] = []
    roots = [CGROUP_ROOT] if (CGROUP_ROOT / "cgroup.controllers").exists() else list(CGROUP_ROOT.iterdir())
    for root in roots:
        for name in CGROUP_NAMES:
            top = root / name
            if top.is_dir():
                found.extend(Path(path) for path, _, _ in os.walk(top))
    return sorted(found, key=lambda path: len(path.parts), reverse=True)


def cgroup_pids(cgroups: Iterable[Path]) -> set[int]:
    pids: set[int] = set()
    for cgroup in cgroups:
        with contextlib.suppress(OSError):
            pids.update(int(pid) for pid in (cgroup / "cgroup.procs").read_text().split())
    return pids


def processes_mentioning(fragment: str) -> set[int]:
    """PIDs whose command line contains ``fragment`` (e.g. a node's folder: every process it started names it)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if fragment in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    found.add(int(entry.name))
    return found - {os.getpid()}


def kill_pids(pids: Iterable[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def remove_cgroups(cgroups: Iterable[Path]) -> list[Path]:
    """rmdir each (deepest first); return those that could not go (a process still inside)."""
    left = []
    for cgroup in cgroups:
        try:
            cgroup.rmdir()
        except FileNotFoundError:
            continue
        except OSError:
            left.append(cgroup)
    return left


def mounts_under(*folders: Path) -> list[str]:
    """Mount points under the given folders, deepest first (from this process's mountinfo)."""
    prefixes = [str(folder.resolve()).rstrip("/") + "/" for folder in folders]
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if any(f"{point}/".startswith(prefix) for prefix in prefixes):
            points.append(point)
    return sorted(points, key=lambda point: point.count("/"), reverse=True)


def unmount_all(*folders: Path) -> None:
    for _ in range(3):  # stacked mounts (a bind over a tmpfs) need another round
        points = mounts_under(*folders)
        if not points:
            return
        for point in points:
            if run_ok("umount", point):
                continue
            run("umount", "-l", point, check=False)
