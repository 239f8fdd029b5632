"""`ferry serve` processes, one per network namespace, with their own data dirs under the run folder."""
import json
import os
import signal
import subprocess
import time
import urllib.request

from . import net
from .util import HarnessError, libfaketime_path, log, wait_until

GRPC_PORT = 7700
SQS_PORT = 9324
ADMIN_PORT = 7800


class Node:
    def __init__(self, i, run_dir):
        self.i = i
        self.ip = net.node_ip(i)
        self.dir = os.path.join(run_dir, "nodes", f"n{i}")
        self.data = os.path.join(self.dir, "data")
        self.clock_file = os.path.join(self.dir, "faketime")
        self.proc = None
        self.log_f = None
        self.paused = False
        self.starts = 0

    @property
    def sqs_url(self):
        return f"http://{self.ip}:{SQS_PORT}"

    @property
    def admin_url(self):
        return f"http://{self.ip}:{ADMIN_PORT}"

    def alive(self):
        return self.proc is not None and self.proc.poll() is None


class Cluster:
    def __init__(self, binary, n, run_dir, clock=False, extra_args=()):
        self.binary = binary
        self.n = n
        self.run_dir = run_dir
        self.clock = clock
        self.extra_args = list(extra_args)
        self.nodes = {i: Node(i, run_dir) for i in range(1, n + 1)}
        # Shared by this cluster's nodes for the run; restarts keep it.
        self.cluster_secret = "jepsen-" + os.urandom(16).hex()
        self.faketime = libfaketime_path() if clock else None
        if clock and not self.faketime:
            raise HarnessError("clock faults need libfaketime (apt-get install -y faketime)")

    def _cmd(self, node):
        peers = []
        for j in range(1, self.n + 1):
            peers += ["--peer", f"{j}={net.node_ip(j)}:{GRPC_PORT}"]
        return ["ip", "netns", "exec", net.ns_name(node.i), self.binary, "serve",
                "--node-id", str(node.i), "--data-dir", node.data,
                "--grpc-addr", f"{node.ip}:{GRPC_PORT}", "--sqs-addr", f"{node.ip}:{SQS_PORT}",
                "--admin-addr", f"{node.ip}:{ADMIN_PORT}", *peers, *self.extra_args]

    def start(self, i):
        node = self.nodes[i]
        if node.alive():
            return
        os.makedirs(node.data, exist_ok=True)
        env = dict(os.environ)
        env["FERRY_CLUSTER_SECRET"] = self.cluster_secret
        env.setdefault("RUST_LOG", "info")
        if self.faketime:
            if not os.path.exists(node.clock_file):
                self.set_clock_offset(i, 0)
            env["LD_PRELOAD"] = self.faketime
            env["FAKETIME_TIMESTAMP_FILE"] = node.clock_file
            env["FAKETIME_DONT_FAKE_MONOTONIC"] = "1"
            env["FAKETIME_CACHE_DURATION"] = "1"
        if node.log_f is None:
            node.log_f = open(os.path.join(node.dir, "ferry.log"), "ab")
        node.log_f.write(f"\n==== harness: start #{node.starts + 1} at {time.time():.3f}\n".encode())
        node.log_f.flush()
        node.proc = subprocess.Popen(self._cmd(node), stdout=node.log_f, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        node.starts += 1
        node.paused = False

    def start_all(self):
        for i in self.nodes:
            self.start(i)

    def set_clock_offset(self, i, seconds):
        """libfaketime re-reads this file (cached for 1 s): the node's wall clock jumps by `seconds`."""
        node = self.nodes[i]
        os.makedirs(node.dir, exist_ok=True)
        tmp = node.clock_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{int(seconds):+d}\n")
        os.replace(tmp, node.clock_file)

    def kill(self, i):
        node = self.nodes[i]
        if node.proc is None:
            return
        if node.proc.poll() is None:
            try:
                os.kill(node.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            node.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            raise HarnessError(f"node {i} (pid {node.proc.pid}) did not die after SIGKILL")
        node.proc = None
        node.paused = False

    def pause(self, i):
        node = self.nodes[i]
        if node.alive():
            os.kill(node.proc.pid, signal.SIGSTOP)
            node.paused = True

    def resume(self, i):
        node = self.nodes[i]
        if node.alive():
            os.kill(node.proc.pid, signal.SIGCONT)
        node.paused = False

    def stop_all(self, graceful=True):
        """SIGCONT then SIGTERM every node we started, SIGKILL what is left after a deadline."""
        for node in self.nodes.values():
            if node.alive():
                try:
                    os.kill(node.proc.pid, signal.SIGCONT)
                    os.kill(node.proc.pid, signal.SIGTERM if graceful else signal.SIGKILL)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 10
        for node in self.nodes.values():
            if node.proc is not None:
                try:
                    node.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    self.kill(node.i)
                node.proc = None
            if node.log_f is not None:
                node.log_f.close()
                node.log_f = None

    # ---- observation -------------------------------------------------------------------------

    def _get(self, node, path, timeout=2.0):
        with urllib.request.urlopen(node.admin_url + path, timeout=timeout) as r:
            return r.status, r.read()

    def ready(self, i):
        try:
            st, _ = self._get(self.nodes[i], "/readyz")
            return st == 200
        except Exception:
            return False

    def wait_ready(self, nodes=None, timeout=60):
        nodes = list(nodes or self.nodes)
        ok = wait_until(lambda: all(self.ready(i) for i in nodes), timeout, 0.3, "nodes ready")
        if not ok:
            dead = [i for i in nodes if not self.nodes[i].alive()]
            raise HarnessError(f"nodes {nodes} not ready after {timeout}s (dead: {dead}); see {self.run_dir}/nodes/*/ferry.log")

    def clock_offset(self, i):
        """The node's wall clock minus ours, from the HTTP Date header of its admin server (1 s
        resolution), or None."""
        import email.utils
        try:
            with urllib.request.urlopen(self.nodes[i].admin_url + "/healthz", timeout=2) as r:
                d = r.headers.get("Date")
            return round(email.utils.parsedate_to_datetime(d).timestamp() - time.time()) if d else None
        except Exception:
            return None

    def groups(self, i):
        """The node's /debug/groups JSON, or None."""
        node = self.nodes[i]
        if not node.alive() or node.paused:
            return None
        try:
            _, body = self._get(node, "/debug/groups", timeout=1.5)
            return json.loads(body)
        except Exception:
            return None

    def leaders(self):
        """{group id: leader node id} from the nodes' own views (the most common answer wins)."""
        votes = {}
        for i in self.nodes:
            g = self.groups(i)
            if not g:
                continue
            items = g if isinstance(g, list) else g.get("groups", [])
            for item in items:
                gid = item.get("group") if "group" in item else item.get("id", item.get("group_id"))
                leader = item.get("leader")
                if gid is None or leader is None:
                    continue
                votes.setdefault(gid, {}).setdefault(leader, 0)
                votes[gid][leader] += 1
        return {g: max(v, key=v.get) for g, v in votes.items()}
