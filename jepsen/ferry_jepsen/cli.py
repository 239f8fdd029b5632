"""Command line: one run, the CI suite, re-checking a history, the checker's self-test."""
import argparse
import atexit
import fcntl
import json
import logging
import os
import random
import shutil
import signal
import sys
import threading
import time

from . import checker, net, report
from .cluster import Cluster
from .history import History, load
from .nemesis import KINDS, Nemesis, wipe_all
from .util import HarnessError, log, require_tools
from .workload import Workload

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_BIN = os.environ.get("FERRY_BIN", "/work/target-jepsen/release/ferry")
# Every run uses the same namespaces and addresses, and its setup tears down whatever holds them,
# so two runs at once would talk to each other's nodes: a run holds this lock from start to end.
LOCK_PATH = "/run/ferry-jepsen.lock"


def hold_run_lock():
    """Takes the machine-wide run lock for the life of this process, or fails at once."""
    handle = open(LOCK_PATH, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        raise HarnessError(f"another jepsen run (pid {holder}) holds {LOCK_PATH}; two runs at once share "
                           "namespaces and addresses and corrupt each other's histories")
    handle.truncate(0)
    handle.write(str(os.getpid()))
    handle.flush()
    return handle  # the lock lasts while this object lives


def clock_margin(faults, skews):
    """How much earlier than its timeout a message may be seen again without a violation: 1 s of
    slack, plus, with clock faults, the widest swing between two clock offsets a leader can have.
    A receive stamped by a leader running 4 s slow and a redelivery decided by a leader running 4 s
    fast (the same node in two windows: libfaketime takes up to 1 s to see an offset change, so a
    stamp just after a heal can still carry the old one) are 8 s apart, not 4."""
    if "clock" not in faults:
        return 1.0
    offsets = [0, *skews]
    return 1.0 + max(offsets) - min(offsets)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="jepsen/run.py", description=__doc__)
    p.add_argument("--faults", default="partition",
                   help="comma list of " + ",".join(KINDS) + "; 'mixed' = all of them interleaved; 'none'")
    p.add_argument("--nodes", type=int, default=5, choices=(3, 5))
    p.add_argument("--duration", type=float, default=60, help="seconds of workload under faults")
    p.add_argument("--recover", type=float, default=10, help="seconds of workload after the final heal")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--binary", default=DEFAULT_BIN)
    p.add_argument("--results", default=os.path.join(HERE, "results"))
    p.add_argument("--name", default=None, help="results subfolder name")
    p.add_argument("--ci", action="store_true", help="every fault kind alone and mixed, 3 nodes, ~1 min each")
    p.add_argument("--ci-duration", type=float, default=45)
    p.add_argument("--plant-loss", type=int, default=0, metavar="N",
                   help="after the run, also check a copy of the history with N acknowledged messages removed "
                        "from every receive (the checker must report them lost)")
    p.add_argument("--plant-wipe", action="store_true",
                   help="planted real fault: before the drain, SIGKILL every node, delete every data dir, restart "
                        "(the checker must report the messages still queued then as lost)")
    p.add_argument("--check", metavar="RUN_DIR", help="re-check RUN_DIR/history.jsonl")
    p.add_argument("--selftest", action="store_true", help="run the checker against synthetic histories")
    p.add_argument("--table", action="store_true", help="print a Markdown row per run in --results (for README.md)")
    p.add_argument("--snapshot-entries", type=int, default=None)
    p.add_argument("--consumers", type=int, default=6)
    p.add_argument("--std-producers", type=int, default=2)
    p.add_argument("--fifo-producers", type=int, default=2)
    p.add_argument("--groups", type=int, default=6, help="FIFO groups per FIFO queue")
    p.add_argument("--op-interval", type=float, default=0.02, help="mean pause between one worker's operations")
    p.add_argument("--op-timeout", type=float, default=15.0)
    p.add_argument("--visibility-timeout", type=int, default=20)
    p.add_argument("--drain-vt", type=int, default=30)
    p.add_argument("--drain-deadline", type=float, default=180)
    p.add_argument("--fifo-retries", type=int, default=3)
    p.add_argument("--quiet", type=float, nargs=2, default=(4.0, 8.0), metavar=("MIN", "MAX"))
    p.add_argument("--fault", type=float, nargs=2, default=(8.0, 15.0), metavar=("MIN", "MAX"))
    p.add_argument("--clock-skews", default="-8,-4,4,8", help="offsets in seconds the clock nemesis picks from")
    p.add_argument("--recovery-limit", type=float, default=30.0)
    p.add_argument("-v", "--verbose", action="store_true")
    a = p.parse_args(argv)
    a.clock_skews = [int(x) for x in a.clock_skews.split(",") if x]
    return a


def fault_list(spec):
    if spec in ("none", ""):
        return []
    if spec == "mixed":
        return list(KINDS)
    kinds = [k.strip() for k in spec.split(",") if k.strip()]
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise HarnessError(f"unknown fault kinds {bad}; known: {KINDS} or mixed/none")
    return kinds


class Run:
    """One cluster run. Cleanup (processes, namespaces, rules) happens in close(), called from a
    finally block, atexit and the signal handlers."""

    def __init__(self, a, faults, name):
        self.a = a
        self.faults = faults
        self.dir = os.path.join(a.results, name)
        self.name = name
        self.cluster = None
        self.closed = False

    def close(self):
        if self.closed:
            return
        self.closed = True
        try:
            if self.cluster:
                self.cluster.stop_all(graceful=True)
        finally:
            net.teardown()

    def execute(self):
        a = self.a
        if not os.access(a.binary, os.X_OK):
            raise HarnessError(f"ferry binary not found at {a.binary} (build: CARGO_TARGET_DIR=/work/target-jepsen cargo build --release --bin ferry)")
        os.makedirs(self.dir, exist_ok=True)
        seed = a.seed if a.seed is not None else random.randrange(1 << 30)
        meta = {"name": self.name, "faults": self.faults, "nodes": a.nodes, "duration": a.duration, "seed": seed,
                "binary": a.binary, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "plant_wipe": a.plant_wipe, "args": {k: v for k, v in vars(a).items() if isinstance(v, (int, float, str, list, tuple, bool, type(None)))}}
        margin = clock_margin(self.faults, a.clock_skews)
        meta["margin"] = margin
        h = History(os.path.join(self.dir, "history.jsonl"))
        extra = ["--snapshot-entries", str(a.snapshot_entries)] if a.snapshot_entries else []
        self.cluster = Cluster(a.binary, a.nodes, self.dir, clock="clock" in self.faults, extra_args=extra)
        net.setup(a.nodes)
        fw = net.Firewall(a.nodes)
        self.cluster.start_all()
        self.cluster.wait_ready(timeout=60)
        wl = Workload(h, self.cluster, a, seed)
        wl.create_queues()
        nem = Nemesis(self.cluster, fw, h, a)
        stop_nem = threading.Event()
        log.info("run %s: faults=%s nodes=%d duration=%ss seed=%d", self.name, self.faults, a.nodes, a.duration, seed)
        wl.start()
        nt = None
        if self.faults:
            nt = threading.Thread(target=nem.run, args=(self.faults, stop_nem, seed + 1), daemon=True, name="nemesis")
            nt.start()
        try:
            stop_nem.wait(a.duration)
        finally:
            stop_nem.set()
            if nt:
                nt.join(60)
            nem.heal_all()
        h.note("healed")
        try:
            self.cluster.wait_ready(timeout=60)
        except HarnessError as e:
            h.note("not-ready-after-heal", error=str(e))
            log.warning("%s", e)
        wl.stop.wait(a.recover)
        wl.finish(timeout=a.op_timeout + 10)
        if a.plant_wipe:
            wipe_all(self.cluster, h)
            self.cluster.wait_ready(timeout=60)
            wl.create_queues()      # the wiped cluster has no queues; the drain needs them to exist
        h.note("drain-start")
        drain = wl.drain(a.drain_deadline)
        h.note("drain-end", status=drain)
        h.close()
        self.close()
        return finish(self.dir, meta, margin, a)


def finish(run_dir, meta, margin, a):
    hist = load(os.path.join(run_dir, "history.jsonl"))
    result = checker.check(hist, margin=margin, recovery_limit=a.recovery_limit)
    with open(os.path.join(run_dir, "verdict.json"), "w") as f:
        json.dump({"meta": meta, **result}, f, indent=1, default=list)
    with open(os.path.join(run_dir, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    try:
        report.plot(hist, os.path.join(run_dir, "plot.png"), f"{meta['name']}: {', '.join(meta['faults']) or 'no faults'}")
    except Exception:
        log.exception("plot failed")
    report.summary(result, meta, os.path.join(run_dir, "summary.md"))
    print_verdict(meta["name"], result)
    if a.plant_loss:
        planted_dir = os.path.join(run_dir, "planted-loss")
        os.makedirs(planted_dir, exist_ok=True)
        mutated, victims = plant_loss(hist, a.plant_loss, meta["seed"])
        with open(os.path.join(planted_dir, "history.jsonl"), "w") as f:
            for rec in mutated:
                f.write(json.dumps(rec) + "\n")
        pres = checker.check(mutated, margin=margin, recovery_limit=a.recovery_limit)
        pmeta = {**meta, "name": meta["name"] + "/planted-loss", "planted_victims": victims}
        with open(os.path.join(planted_dir, "verdict.json"), "w") as f:
            json.dump({"meta": pmeta, **pres}, f, indent=1, default=list)
        report.summary(pres, pmeta, os.path.join(planted_dir, "summary.md"))
        caught = set(e["body"] for e in pres["properties"]["no-loss"]["examples"]) | set()
        print(f"planted loss of {len(victims)} acknowledged messages: checker says no-loss "
              f"{'VIOLATED' if not pres['properties']['no-loss']['valid'] else 'ok (NOT CAUGHT)'} "
              f"({pres['properties']['no-loss']['count']} lost)")
        result["planted_loss_caught"] = (not pres["properties"]["no-loss"]["valid"]
                                         and pres["properties"]["no-loss"]["count"] >= len(victims))
    return result


def plant_loss(hist, n, seed):
    """A copy of the history in which n acknowledged sends are never seen by any receive (and their
    deletes and visibility changes are gone) - what a server that acknowledged before commit and then
    lost the entry would produce."""
    acked = []
    for rec in hist:
        if rec["type"] == "ok" and rec["f"] in ("send", "send_batch"):
            acked += [e["body"] for e in rec["value"]["entries"] if e["result"] == "ok"]
    rng = random.Random(seed)
    victims = sorted(rng.sample(acked, min(n, len(acked))))
    vs = set(victims)
    out = []
    for rec in hist:
        if rec.get("f") == "receive" and rec["type"] == "ok":
            rec = {**rec, "value": {**rec["value"], "messages": [m for m in rec["value"].get("messages", []) if m["body"] not in vs]}}
        elif rec.get("f") in ("delete", "cmv") and rec["value"].get("body") in vs:
            continue
        out.append(rec)
    return out, victims


def results_table(root):
    for name in sorted(os.listdir(root)):
        for sub in ("", "planted-loss"):
            path = os.path.join(root, name, sub, "verdict.json")
            if not os.path.exists(path):
                continue
            v = json.load(open(path))
            m, p, st = v["meta"], v["properties"], v["stats"]
            bad = [f"{k} ({x['count']})" for k, x in p.items() if not x["valid"]]
            nl = p["no-loss"]
            notes = []
            if p["delete-final"].get("standard_second_copies"):
                notes.append(f"{p['delete-final']['standard_second_copies']} second-copy redeliveries (standard, allowed)")
            if m.get("plant_wipe"):
                notes.append("planted: every node wiped before the drain")
            if sub:
                notes.append(f"planted loss of {len(m.get('planted_victims', []))} acked messages")
            notes.append(f"{st['fault_windows']} fault windows")
            print(f"| {m['name']} | {', '.join(m['faults']) or 'none'} | {m['nodes']} | {m['duration']} | {st['ops']} | "
                  f"{nl['acknowledged']} | {nl['unknown']} | {'PASS' if v['valid'] else 'FAIL: ' + ', '.join(bad)} | {'; '.join(notes)} |")
    return 0


def print_verdict(name, result):
    p = result["properties"]
    print(f"== {name}: {'PASS' if result['valid'] else 'FAIL'}  " +
          "  ".join(f"{k}={'ok' if v['valid'] else 'VIOLATED(' + str(v['count']) + ')'}" for k, v in p.items()) +
          f"  ops={result['stats']['ops']}", flush=True)


def run_one(a, faults, name):
    r = Run(a, faults, name)
    atexit.register(r.close)
    try:
        return r.execute()
    finally:
        r.close()


def main(argv=None):
    a = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.DEBUG if a.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(threadName)s %(message)s")

    def on_signal(sig, frame):
        raise KeyboardInterrupt(f"signal {sig}")
    signal.signal(signal.SIGTERM, on_signal)

    if a.selftest:
        from . import selftest
        return selftest.main()
    if a.table:
        return results_table(a.results)
    if a.check:
        meta = json.load(open(os.path.join(a.check, "meta.json"))) if os.path.exists(os.path.join(a.check, "meta.json")) else \
            {"name": os.path.basename(a.check.rstrip("/")), "faults": [], "nodes": "?", "duration": "?", "seed": 0, "binary": "?"}
        # Recomputed, not read from the meta: runs recorded before the margin covered a node's swing
        # from one skew to another are re-checked with the right one.
        skews = meta.get("args", {}).get("clock_skews") or a.clock_skews
        margin = clock_margin(meta.get("faults", []), skews)
        res = finish(a.check, meta, margin, a)
        return 0 if res["valid"] and res.get("planted_loss_caught", True) else 1

    try:
        lock = hold_run_lock()  # noqa: F841 (held until exit)
    except HarnessError as e:
        log.error("%s", e)
        return 2
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if a.ci:
        a.nodes = 3
        a.duration = a.ci_duration
        a.recover = min(a.recover, 8)
        a.quiet = (3.0, 6.0)
        a.fault = (6.0, 12.0)
        # shorter visibility timeouts keep the drain short; smaller skews keep the visibility check sharp
        a.visibility_timeout = 12
        a.drain_vt = 15
        a.clock_skews = [-4, -2, 2, 4]
        plan = [[k] for k in KINDS] + [list(KINDS)]
        require_tools(need_clock=True)
        failed = []
        for faults in plan:
            label = "mixed" if len(faults) > 1 else faults[0]
            a.plant_loss = 5 if label == "partition" else 0
            try:
                res = run_one(a, faults, f"ci-{stamp}-{label}-n3")
                if not res["valid"] or not res.get("planted_loss_caught", True):
                    failed.append(label)
            except HarnessError as e:
                log.error("run %s could not complete: %s", label, e)
                failed.append(label + " (harness)")
        print("CI:", "PASS" if not failed else f"FAIL: {failed}")
        return 1 if failed else 0

    faults = fault_list(a.faults)
    require_tools(need_clock="clock" in faults)
    label = "mixed" if a.faults == "mixed" else ("+".join(faults) or "none")
    name = a.name or f"{stamp}-{label}-n{a.nodes}"
    try:
        res = run_one(a, faults, name)
    except HarnessError as e:
        log.error("%s", e)
        return 2
    if a.plant_wipe:
        return 0 if not res["properties"]["no-loss"]["valid"] else 1
    return 0 if res["valid"] and res.get("planted_loss_caught", True) else 1
