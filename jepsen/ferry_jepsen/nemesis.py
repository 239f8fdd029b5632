"""Fault injection: partitions, packet loss, pauses, crashes, multi-node kills, clock skew.

Each fault kind has start(rng) -> detail dict and stop() that undoes it. The scheduler alternates
quiet and fault windows and records both edges in the history."""
import random
import shutil
import threading
import time

from .util import log, wait_until

KINDS = ("partition", "loss", "pause", "crash", "kill-many", "clock")


class Nemesis:
    def __init__(self, cluster, firewall, history, opts):
        self.c = cluster
        self.fw = firewall
        self.h = history
        self.opts = opts
        self.n = cluster.n
        self.active = None       # (kind, detail)
        self.lock = threading.Lock()
        self.skews = list(opts.clock_skews)

    def nodes(self):
        return list(range(1, self.n + 1))

    def leader(self, rng):
        """A node that leads some queue partition (or the catalog), from /debug/groups; None if unknown."""
        leaders = self.c.leaders()
        if not leaders:
            return None
        part = [l for g, l in leaders.items() if g != 0]
        return rng.choice(part) if part and rng.random() < 0.7 else leaders.get(0, rng.choice(list(leaders.values())))

    # ---- individual faults ---------------------------------------------------------------------

    def start(self, kind, rng):
        ns = self.nodes()
        if kind == "partition":
            mode = rng.choice(["halves", "isolate-one", "isolate-leader", "bridge"])
            shuffled = ns[:]
            rng.shuffle(shuffled)
            if mode == "isolate-leader":
                lead = self.leader(rng)
                if lead is None:
                    mode = "isolate-one"
                else:
                    shuffled.remove(lead)
                    shuffled.insert(0, lead)
            if mode == "halves":
                cut = self.n // 2
                comps = [set(shuffled[:cut]), set(shuffled[cut:])]
            elif mode in ("isolate-one", "isolate-leader"):
                comps = [{shuffled[0]}, set(shuffled[1:])]
            else:  # bridge: two majorities that share one node
                mid = self.n // 2
                comps = [set(shuffled[:mid + 1]), set(shuffled[mid:])]
            self.fw.partition(comps)
            return {"mode": mode, "components": [sorted(c) for c in comps]}
        if kind == "loss":
            p = rng.choice([0.2, 0.3, 0.5])
            victims = ns if rng.random() < 0.5 else rng.sample(ns, max(1, self.n // 2))
            for i in victims:
                self.fw.drop_from(i, ns, probability=p)
            return {"probability": p, "nodes": sorted(victims)}
        if kind == "pause":
            v = self.leader(rng) if rng.random() < 0.5 else None
            v = v or rng.choice(ns)
            self.c.pause(v)
            return {"nodes": [v]}
        if kind == "crash":
            v = self.leader(rng) if rng.random() < 0.5 else None
            v = v or rng.choice(ns)
            self.c.kill(v)
            return {"nodes": [v]}
        if kind == "kill-many":
            k = self.n if rng.random() < 0.3 else self.n // 2 + 1
            vs = rng.sample(ns, k)
            for v in vs:
                self.c.kill(v)
            return {"nodes": sorted(vs)}
        if kind == "clock":
            v = rng.choice(ns)
            s = rng.choice(self.skews)
            self.c.set_clock_offset(v, s)
            return {"nodes": [v], "offset_s": s}
        raise ValueError(kind)

    def stop(self, kind, detail):
        if kind in ("partition", "loss"):
            self.fw.heal()
        elif kind == "pause":
            for v in detail["nodes"]:
                self.c.resume(v)
        elif kind in ("crash", "kill-many"):
            for v in detail["nodes"]:
                self.c.start(v)
        elif kind == "clock":
            for v in detail["nodes"]:
                self.c.set_clock_offset(v, 0)

    def heal_all(self):
        """Undo everything, whatever state we are in (used at the end and on errors)."""
        with self.lock:
            if self.active:
                kind, detail = self.active
                try:
                    self.stop(kind, detail)
                finally:
                    self.h.nemesis("stop", kind, **detail)
                    self.active = None
        self.fw.heal()
        for i, node in self.c.nodes.items():
            if node.paused:
                self.c.resume(i)
            if not node.alive():
                self.c.start(i)
            if self.c.faketime:
                self.c.set_clock_offset(i, 0)

    # ---- the schedule --------------------------------------------------------------------------

    def run(self, kinds, stop_event, seed):
        """Quiet window, fault window, ... until stop_event. Bounded by the event and a window count."""
        rng = random.Random(seed)
        for window in range(10000):
            if stop_event.wait(rng.uniform(*self.opts.quiet)):
                return
            kind = rng.choice(kinds)
            try:
                with self.lock:
                    detail = self.start(kind, rng)
                    self.active = (kind, detail)
                    self.h.nemesis("start", kind, **detail)
                log.info("nemesis start %s %s", kind, detail)
                if kind == "clock":
                    # libfaketime re-reads the offset file within 1 s. Evidence from the node's HTTP Date
                    # header (1 s resolution; hyper caches it, so a backwards jump shows only once the
                    # faked clock passes the cached second):
                    stop_event.wait(1.5)
                    self.h.note("clock-observed", node=detail["nodes"][0], offset_s=detail["offset_s"],
                                date_header_offset_s=self.c.clock_offset(detail["nodes"][0]))
            except Exception as e:
                log.exception("nemesis %s failed to start", kind)
                self.h.note("nemesis-error", kind=kind, error=str(e))
                continue
            stop_event.wait(rng.uniform(*self.opts.fault))
            with self.lock:
                if self.active is None:
                    return
                try:
                    self.stop(kind, detail)
                except Exception as e:
                    log.exception("nemesis %s failed to stop", kind)
                    self.h.note("nemesis-error", kind=kind, error=str(e))
                self.h.nemesis("stop", kind, **detail)
                self.active = None
            log.info("nemesis stop %s", kind)


def wipe_all(cluster, history):
    """The planted fault: SIGKILL every node, delete every data directory, restart. No replicated
    system survives losing every disk, so every acknowledged message still queued at that moment is
    really gone, and the drain (through the real SQS endpoint) must find it missing."""
    ns = list(cluster.nodes)
    history.nemesis("start", "wipe-all", nodes=ns)
    for v in ns:
        cluster.kill(v)
    for v in ns:
        shutil.rmtree(cluster.nodes[v].data, ignore_errors=True)
    time.sleep(1)
    for v in ns:
        cluster.start(v)
    history.nemesis("stop", "wipe-all", nodes=ns)
