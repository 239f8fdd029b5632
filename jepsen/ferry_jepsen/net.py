"""The harness network: a bridge in the root namespace and one network namespace per node.

Only harness-owned names are used (bridge `fjbr0`, namespaces `fj-n<i>`, veths `fjv<i>`/`fjp<i>`) on
10.77.0.0/24, which has no route off the machine. Faults are iptables (or nft) rules inside the
node namespaces, so they vanish with the namespaces."""
import os
import shutil
import signal

from .util import HarnessError, log, sh

BRIDGE = "fjbr0"
SUBNET = "10.77.0"
CLIENT_IP = f"{SUBNET}.1"


def ns_name(i):
    return f"fj-n{i}"


def node_ip(i):
    return f"{SUBNET}.{10 + i}"


def _list_netns():
    p = sh(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in p.stdout.splitlines() if line.strip()]


def _links():
    p = sh(["ip", "-o", "link", "show"], check=False)
    names = []
    for line in p.stdout.splitlines():
        parts = line.split(":")
        if len(parts) > 1:
            names.append(parts[1].strip().split("@")[0])
    return names


def teardown():
    """Removes every harness-owned namespace and link (idempotent; safe to call at start and exit)."""
    for ns in _list_netns():
        if ns.startswith("fj-n"):
            # processes a previous, killed harness left inside its own namespaces (ferry nodes)
            pids = sh(["ip", "netns", "pids", ns], check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError, PermissionError):
                    pass
            sh(["ip", "netns", "del", ns], check=False)
    for link in _links():
        if link == BRIDGE or link.startswith("fjv"):
            sh(["ip", "link", "del", link], check=False)


def setup(n):
    teardown()
    # Refuse to shadow a subnet something else on the machine uses.
    routes = sh(["ip", "-o", "addr", "show"], check=False).stdout
    for line in routes.splitlines():
        if f" {SUBNET}." in line and BRIDGE not in line:
            raise HarnessError(f"{SUBNET}.0/24 is already used on this machine: {line.strip()}")
    sh(["ip", "link", "add", BRIDGE, "type", "bridge"])
    sh(["ip", "addr", "add", f"{CLIENT_IP}/24", "dev", BRIDGE])
    sh(["ip", "link", "set", BRIDGE, "up"])
    for i in range(1, n + 1):
        ns = ns_name(i)
        sh(["ip", "netns", "add", ns])
        sh(["ip", "link", "add", f"fjv{i}", "type", "veth", "peer", "name", f"fjp{i}"])
        sh(["ip", "link", "set", f"fjp{i}", "netns", ns])
        sh(["ip", "link", "set", f"fjv{i}", "master", BRIDGE])
        sh(["ip", "link", "set", f"fjv{i}", "up"])
        sh(["ip", "netns", "exec", ns, "ip", "addr", "add", f"{node_ip(i)}/24", "dev", f"fjp{i}"])
        sh(["ip", "netns", "exec", ns, "ip", "link", "set", f"fjp{i}", "up"])
        sh(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"])


class Firewall:
    """Per-namespace packet filters between nodes (never between the client and a node)."""

    def __init__(self, n):
        self.n = n
        self.use_nft = shutil.which("iptables") is None

    def _ipt(self, i, *args):
        return sh(["ip", "netns", "exec", ns_name(i), "iptables", "-w", "5", *args], timeout=15)

    def _nft(self, i, rule):
        sh(["ip", "netns", "exec", ns_name(i), "nft", "add", "table", "inet", "fj"], timeout=15)
        sh(["ip", "netns", "exec", ns_name(i), "nft", "add", "chain", "inet", "fj", "input",
            "{ type filter hook input priority 0 ; policy accept ; }"], timeout=15)
        sh(["ip", "netns", "exec", ns_name(i), "nft", "add", "rule", "inet", "fj", "input", *rule.split()], timeout=15)

    def drop_from(self, i, peers, probability=None):
        """Node i drops packets arriving from each node in peers (with a probability: random loss)."""
        for p in peers:
            if p == i:
                continue
            src = node_ip(p)
            if self.use_nft:
                if probability is None:
                    self._nft(i, f"ip saddr {src} drop")
                else:
                    self._nft(i, f"ip saddr {src} numgen random mod 1000 < {int(probability * 1000)} drop")
            else:
                if probability is None:
                    self._ipt(i, "-A", "INPUT", "-s", src, "-j", "DROP")
                else:
                    self._ipt(i, "-A", "INPUT", "-s", src, "-m", "statistic", "--mode", "random",
                              "--probability", f"{probability:.3f}", "-j", "DROP")

    def partition(self, components):
        """components: list of sets of node ids; nodes in different components cannot talk.
        A node may be in several components (a bridge); it then talks to each of them."""
        for i in range(1, self.n + 1):
            reach = set()
            for c in components:
                if i in c:
                    reach |= set(c)
            blocked = [p for p in range(1, self.n + 1) if p != i and p not in reach]
            self.drop_from(i, blocked)

    def heal(self):
        for i in range(1, self.n + 1):
            if self.use_nft:
                sh(["ip", "netns", "exec", ns_name(i), "nft", "delete", "table", "inet", "fj"], check=False, timeout=15)
            else:
                sh(["ip", "netns", "exec", ns_name(i), "iptables", "-w", "5", "-F", "INPUT"], check=False, timeout=15)

    def rules(self):
        out = {}
        for i in range(1, self.n + 1):
            if self.use_nft:
                out[i] = sh(["ip", "netns", "exec", ns_name(i), "nft", "list", "ruleset"], check=False).stdout
            else:
                out[i] = sh(["ip", "netns", "exec", ns_name(i), "iptables", "-S", "INPUT"], check=False).stdout
        return out
