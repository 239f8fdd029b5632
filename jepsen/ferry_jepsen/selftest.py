"""The checker against synthetic histories: each case says which properties must be violated."""
from . import checker


class H:
    """Builds a history by hand: each op is invoked at t and completes at t + d."""

    def __init__(self):
        self.recs = []
        self.n = 0

    def op(self, f, queue, t, d, kind, inv, out=None, proc="p"):
        self.n += 1
        self.recs.append({"id": self.n, "type": "invoke", "f": f, "proc": proc, "node": 1, "queue": queue, "t": t, "value": inv})
        if kind is not None:
            self.recs.append({"id": self.n, "type": kind, "f": f, "proc": proc, "node": 1, "queue": queue, "t": t + d,
                              "value": out if out is not None else inv})
        return self.n

    def send(self, q, t, bodies, kind="ok", d=0.01, ids=None, group=None):
        entries = [{"body": b, **({"group": group, "dedup": b} if group else {})} for b in bodies]
        out = {"entries": [{**e, "result": "ok", "message_id": (ids or {}).get(e["body"], "id-" + e["body"])} for e in entries]}
        return self.op("send_batch" if len(bodies) > 1 else "send", q, t, d, kind, {"entries": entries}, out if kind == "ok" else None)

    def recv(self, q, t, bodies, vt=20, d=0.01, ids=None, proc="c", tag="", counts=None):
        self.counts = getattr(self, "counts", {})
        msgs = []
        for b in bodies:
            self.counts[b] = self.counts.get(b, 0) + 1
            c = (counts or {}).get(b, self.counts[b])
            msgs.append({"body": b, "message_id": (ids or {}).get(b, "id-" + b), "handle": f"h{self.n + 1}-{b}{tag}", "count": c})
        rid = self.op("receive", q, t, d, "ok", {"max": 10, "vt": vt, "wait": 0}, {"max": 10, "vt": vt, "wait": 0, "messages": msgs}, proc=proc)
        return rid, {m["body"]: m for m in msgs}

    def delete(self, q, t, rid, m, kind="ok", d=0.01):
        return self.op("delete", q, t, d, kind, {"body": m["body"], "message_id": m["message_id"], "handle": m["handle"], "recv": rid})

    def cmv(self, q, t, rid, m, vt, kind="ok", d=0.01):
        return self.op("cmv", q, t, d, kind, {"body": m["body"], "message_id": m["message_id"], "handle": m["handle"], "recv": rid, "vt": vt})

    def nem(self, t, phase, kind):
        self.recs.append({"type": "nemesis", "t": t, "value": {"phase": phase, "kind": kind}})

    def drained(self, q, t):
        self.recs.append({"type": "note", "t": t, "value": {"what": "drained", "queue": q, "result": "empty"}})


S, F = "fj-std", "fj-fifo.fifo"


def case_clean():
    h = H()
    h.send(S, 0, ["S-a-1", "S-a-2"])
    h.send(S, 0.1, ["S-a-3"], kind="info")              # unknown: may or may not appear
    h.send(S, 0.2, ["S-a-4"], kind="info")
    r, m = h.recv(S, 1, ["S-a-1", "S-a-4"])
    h.delete(S, 1.1, r, m["S-a-1"])
    h.cmv(S, 1.2, r, m["S-a-4"], 0)                        # released at once
    r2, m2 = h.recv(S, 1.5, ["S-a-4", "S-a-2"])            # redelivery after CMV 0: fine
    h.delete(S, 1.6, r2, m2["S-a-4"])
    r3, m3 = h.recv(S, 30, ["S-a-2"])                      # S-a-2 left in flight: visible again after vt
    h.delete(S, 30.1, r3, m3["S-a-2"])
    # stale handle: received, expired, received again, old handle deletes nothing, then seen again
    h.send(S, 2, ["S-b-1"])
    r4, m4 = h.recv(S, 3, ["S-b-1"], vt=5)
    r5, m5 = h.recv(S, 9, ["S-b-1"], vt=5)
    h.delete(S, 9.5, r4, m4["S-b-1"])                       # stale (r5 took it again): may keep it
    r6, _ = h.recv(S, 15, ["S-b-1"])                        # allowed
    # FIFO group in order, with a deduplicated retry
    h.send(F, 0, ["F-fj-fifo-g1-1"], kind="info", group="g1")
    h.send(F, 0.5, ["F-fj-fifo-g1-1"], group="g1")
    h.send(F, 1, ["F-fj-fifo-g1-2", "F-fj-fifo-g1-3"], group="g1")
    r7, m7 = h.recv(F, 2, ["F-fj-fifo-g1-1", "F-fj-fifo-g1-2"])
    h.delete(F, 2.1, r7, m7["F-fj-fifo-g1-1"])
    h.cmv(F, 2.2, r7, m7["F-fj-fifo-g1-2"], 0)
    r8, m8 = h.recv(F, 3, ["F-fj-fifo-g1-2", "F-fj-fifo-g1-3"])
    h.delete(F, 3.1, r8, m8["F-fj-fifo-g1-2"])
    h.delete(F, 3.1, r8, m8["F-fj-fifo-g1-3"])
    h.nem(5, "start", "partition")
    h.send(S, 6, ["S-c-1"], kind="fail")
    h.nem(10, "stop", "partition")
    h.send(S, 11, ["S-c-2"])
    h.recv(S, 12, ["S-c-2"])
    h.drained(S, 40)
    h.drained(F, 40)
    return h.recs, set()


def case_loss():
    recs, _ = case_clean()
    h = H()
    h.recs = recs
    h.n = 1000
    h.send(S, 13, ["S-lost-1"])
    return h.recs, {"no-loss"}


def case_phantom():
    h = H()
    h.recv(S, 1, ["S-never-1"])
    h.send(S, 2, ["S-failed-1"], kind="fail")
    h.recv(S, 3, ["S-failed-1"])
    return h.recs, {"no-phantom"}


def case_fifo_backwards():
    h = H()
    h.send(F, 0, ["F-fj-fifo-g2-1", "F-fj-fifo-g2-2", "F-fj-fifo-g2-3"], group="g2")
    r, m = h.recv(F, 1, ["F-fj-fifo-g2-2"])                 # skipped 1 (still in the queue)
    h.delete(F, 1.1, r, m["F-fj-fifo-g2-2"])
    h.recv(F, 2, ["F-fj-fifo-g2-1", "F-fj-fifo-g2-3"])       # went back to 1
    return h.recs, {"fifo-order"}


def case_fifo_zombie_unknown():
    h = H()
    h.send(F, 0, ["F-fj-fifo-g5-1"], group="g5", kind="info")   # unknown, never retried ok
    h.send(F, 1, ["F-fj-fifo-g5-2"], group="g5")
    r, m = h.recv(F, 2, ["F-fj-fifo-g5-2"])
    h.delete(F, 2.1, r, m["F-fj-fifo-g5-2"])
    r, m = h.recv(F, 3, ["F-fj-fifo-g5-1"])                     # the zombie landed late: allowed
    h.delete(F, 3.1, r, m["F-fj-fifo-g5-1"])
    return h.recs, set()


def case_fifo_inside():
    h = H()
    h.send(F, 0, ["F-fj-fifo-g2-1", "F-fj-fifo-g2-2"], group="g2")
    h.recv(F, 1, ["F-fj-fifo-g2-2", "F-fj-fifo-g2-1"])
    return h.recs, {"fifo-order"}


def case_fifo_dup():
    h = H()
    h.send(F, 0, ["F-fj-fifo-g3-1"], group="g3", kind="info")
    h.send(F, 1, ["F-fj-fifo-g3-1"], group="g3")
    r, m = h.recv(F, 2, ["F-fj-fifo-g3-1"])
    h.delete(F, 2.1, r, m["F-fj-fifo-g3-1"])
    h.recv(F, 3, ["F-fj-fifo-g3-1"], ids={"F-fj-fifo-g3-1": "other-id"})   # a second stored copy
    return h.recs, {"fifo-dedup", "delete-final"}


def case_fifo_lock():
    h = H()
    h.send(F, 0, ["F-fj-fifo-g4-1", "F-fj-fifo-g4-2"], group="g4")
    r, m = h.recv(F, 1, ["F-fj-fifo-g4-1"])                  # in flight for 20 s
    h.recv(F, 2, ["F-fj-fifo-g4-2"])                         # the group was locked
    return h.recs, {"fifo-group-lock"}


def case_fifo_lock_released():
    h = H()
    h.send(F, 0, ["F-fj-fifo-g4-1", "F-fj-fifo-g4-2"], group="g4")
    r, m = h.recv(F, 1, ["F-fj-fifo-g4-1"])
    h.delete(F, 1.5, r, m["F-fj-fifo-g4-1"])
    r2, m2 = h.recv(F, 2, ["F-fj-fifo-g4-2"])
    h.delete(F, 2.5, r2, m2["F-fj-fifo-g4-2"])
    return h.recs, set()


def case_delete_then_redeliver():
    h = H()
    h.send(S, 0, ["S-d-1"])
    r, m = h.recv(S, 1, ["S-d-1"])
    h.delete(S, 1.1, r, m["S-d-1"])                          # current handle, acknowledged
    h.recv(S, 40, ["S-d-1"])                                 # after the vt: must not come back
    return h.recs, {"delete-final"}


def case_delete_then_second_copy_via_unknown_receive():
    h = H()
    h.send(S, 0, ["S-d-3"])
    r, m = h.recv(S, 1, ["S-d-3"])
    h.delete(S, 1.1, r, m["S-d-3"])
    h.op("receive", S, 2, 0.5, "info", {"max": 10, "vt": 20, "wait": 0})   # may have taken a second copy
    h.recv(S, 40, ["S-d-3"])                                  # count 2: that copy, received once before
    return h.recs, set()


def case_delete_unknown():
    h = H()
    h.send(S, 0, ["S-d-1"])
    r, m = h.recv(S, 1, ["S-d-1"])
    h.delete(S, 1.1, r, m["S-d-1"], kind="info")             # unknown outcome: may not have happened
    h.recv(S, 40, ["S-d-1"])
    return h.recs, set()


def case_second_copy():
    h = H()
    h.send(S, 0, ["S-d-2"])
    r, m = h.recv(S, 1, ["S-d-2"])
    h.delete(S, 1.1, r, m["S-d-2"])
    h.recv(S, 2, ["S-d-2"], counts={"S-d-2": 1})              # count 1 again: a second stored copy
    return h.recs, set()


def case_early():
    h = H()
    h.send(S, 0, ["S-e-1"])
    h.recv(S, 1, ["S-e-1"], vt=20)
    h.recv(S, 5, ["S-e-1"])                                  # only 4 s later
    return h.recs, {"visibility"}


def case_cmv_extend_then_early():
    h = H()
    h.send(S, 0, ["S-e-1"])
    r, m = h.recv(S, 1, ["S-e-1"], vt=20)
    h.cmv(S, 2, r, m["S-e-1"], 5)                            # shortened to 5 s from t=2: visible from t=7
    h.recv(S, 8, ["S-e-1"])
    return h.recs, set()


def case_cmv_definite_fail_then_early():
    # the shape of Finding 1 in README.md: the change answered 400 MessageNotInflight (definitely not
    # applied, by its own answer), yet the message came back 8 s into a 20 s visibility timeout
    h = H()
    h.send(S, 0, ["S-v-1"])
    r, m = h.recv(S, 4.43, ["S-v-1"], vt=20)
    h.cmv(S, 4.45, r, m["S-v-1"], 0, kind="fail", d=3.1)
    h.recv(S, 12.3, ["S-v-1"])
    return h.recs, {"visibility"}


def case_availability():
    h = H()
    h.nem(1, "start", "crash")
    h.send(S, 1.5, ["S-x-1"], kind="info", d=10)
    h.nem(5, "stop", "crash")
    h.send(S, 5.5, ["S-x-2"], kind="fail", d=10)
    h.send(S, 70, ["S-x-3"])
    h.recv(S, 70, ["S-x-3"])
    return h.recs, {"availability"}


CASES = [case_clean, case_loss, case_phantom, case_fifo_backwards, case_fifo_zombie_unknown, case_fifo_inside, case_fifo_dup,
         case_fifo_lock, case_fifo_lock_released, case_delete_then_redeliver, case_delete_then_second_copy_via_unknown_receive, case_delete_unknown, case_second_copy, case_early,
         case_cmv_extend_then_early, case_cmv_definite_fail_then_early, case_availability]


def main():
    bad = 0
    for case in CASES:
        recs, expect = case()
        res = checker.check(recs, margin=1.0, recovery_limit=30)
        got = {k for k, v in res["properties"].items() if not v["valid"]}
        ok = got == expect
        bad += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {case.__name__}: expected violations {sorted(expect)}, got {sorted(got)}")
        if not ok:
            for k in got ^ expect:
                print("   ", k, res["properties"][k]["examples"][:2])
    print("selftest:", "PASS" if not bad else f"{bad} FAILED")
    return 1 if bad else 0
