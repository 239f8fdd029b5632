"""The checker: reads a history and decides each property.

Properties (issue 5, section 4):
  no-loss          (a) every send acknowledged ok was received at least once (the final drain included)
  no-phantom       (b) nothing was received that was never sent; a send that failed definitely
                       (4xx, 503, connection refused) never appears; a message arrives on the queue it
                       was sent to
  fifo-order       (c) within each FIFO group, no receive goes back to an earlier acknowledged message
                       that a receive completed before it had skipped (a send whose every attempt is
                       unknown may land late, so it is exempt)
  fifo-dedup       (c) a FIFO body (= its deduplication id) is stored once: one MessageId for every
                       acknowledged attempt and every delivery
  fifo-group-lock  (c) while a group has a message in flight, no other message of the group is delivered
  delete-final     (d) a message deleted with a current handle is never delivered to a receive invoked
                       after the delete was acknowledged
  visibility       (d) a received message is not delivered again before its visibility timeout can
                       have expired (or been changed)
  On standard queues a message may exist as several stored copies under one MessageId (SQS is
  at-least-once), so a redelivery that a second copy can explain is counted, not reported: its
  ApproximateReceiveCount c is not above the first delivery's, or the MessageId showed one count twice,
  or c-1 earlier receives (other ok deliveries, or receives of unknown outcome on the queue since the
  send) could have taken that copy.
  availability     (e) the fraction of ok operations in each fault window and the time to the first ok
                       send and receive after it; valid when every window recovered within the limit

Time reasoning. Every receive R has [invoke, complete]; the server stamps the message's new visibility
deadline at some instant inside that interval, using the leader's clock. A redelivery therefore cannot
happen before R.invoke + VisibilityTimeout in the leader's clock. A node with a skewed clock can move
the replicated time by up to its skew, and a receive stamped by a slow leader can be followed by a
redelivery decided by a fast one, so every such bound is lowered by `margin` (the widest swing between
two clock offsets, 0 included, + slack).
A ChangeMessageVisibility c on the same handle can make the message visible at c.invoke + c.vt at the
earliest. A delete D is *certainly current* if it completed before the earliest moment the message
could have become visible again (then no other receive can have taken it, so its handle was current);
SQS says a delete with a stale handle may delete nothing, so deletes we cannot prove current are
ignored for delete-final. Receives whose outcome is unknown can only take messages that are visible,
so they never invalidate these bounds."""
import collections
import re

FIFO_BODY = re.compile(r"^F-(.+)-(g\d+)-(\d+)$")


class Op:
    __slots__ = ("id", "f", "proc", "node", "queue", "t_inv", "t_done", "kind", "inv", "out", "error")

    def __init__(self, inv):
        self.id = inv["id"]
        self.f = inv["f"]
        self.proc = inv["proc"]
        self.node = inv["node"]
        self.queue = inv["queue"]
        self.t_inv = inv["t"]
        self.inv = inv["value"]
        self.t_done = None
        self.kind = "info"      # never completed = unknown
        self.out = None
        self.error = None


def parse(history):
    ops, nemesis, notes = {}, [], []
    end_t = 0.0
    for rec in history:
        end_t = max(end_t, rec.get("t", 0))
        ty = rec["type"]
        if ty == "invoke":
            ops[rec["id"]] = Op(rec)
        elif ty in ("ok", "fail", "info"):
            op = ops.get(rec["id"])
            if op is None:
                continue
            op.kind, op.t_done, op.out, op.error = ty, rec["t"], rec.get("value"), rec.get("error")
        elif ty == "nemesis":
            nemesis.append(rec)
        elif ty == "note":
            notes.append(rec)
    for op in ops.values():
        if op.t_done is None:
            op.t_done = end_t
    return ops, nemesis, notes, end_t


def windows(nemesis, end_t):
    """[(kind, start, stop, detail)] from the nemesis start/stop records."""
    out, open_ = [], {}
    for rec in nemesis:
        v = rec["value"]
        if v["phase"] == "start":
            open_[v["kind"]] = (rec["t"], v)
        elif v["kind"] in open_:
            s, d = open_.pop(v["kind"])
            out.append((v["kind"], s, rec["t"], d))
    for k, (s, d) in open_.items():
        out.append((k, s, end_t, d))
    return sorted(out, key=lambda w: w[1])


def _verdict(problems, limit=20, **extra):
    return {"valid": not problems, "count": len(problems), "examples": problems[:limit], **extra}


def check(history, margin=1.0, recovery_limit=30.0, drain_status=None):
    ops, nemesis, notes, end_t = parse(history)
    if drain_status is None:
        drain_status = {n["value"]["queue"]: n["value"]["result"] for n in notes if n["value"].get("what") == "drained"}

    # ---- sends -------------------------------------------------------------------------------
    sends = {}          # body -> {"queue", "status", "ids": set, "attempts": [...]}
    rank = {"fail": 0, "info": 1, "ok": 2}
    for op in ops.values():
        if op.f not in ("send", "send_batch"):
            continue
        entries = op.inv["entries"]
        results = {}
        if op.kind == "ok":
            for e in op.out["entries"]:
                results[e["body"]] = (e["result"], e.get("message_id"))
        for e in entries:
            res, mid = results.get(e["body"], (op.kind, None)) if op.kind == "ok" else (op.kind, None)
            s = sends.setdefault(e["body"], {"queue": op.queue, "status": "fail", "ids": set(), "attempts": []})
            s["attempts"].append({"op": op.id, "result": res, "message_id": mid, "t": [op.t_inv, op.t_done]})
            if rank[res] > rank[s["status"]]:
                s["status"] = res
            if res == "ok" and mid:
                s["ids"].add(mid)

    # ---- deliveries, deletes, visibility changes -----------------------------------------------
    receives = [op for op in ops.values() if op.f == "receive" and op.kind == "ok"]
    deliveries = collections.defaultdict(list)   # body -> [(recv op, msg)]
    for r in receives:
        for m in r.out.get("messages", []):
            deliveries[m["body"]].append((r, m))
    deletes = collections.defaultdict(list)      # (recv id, handle) -> [delete op]
    cmvs = collections.defaultdict(list)
    for op in ops.values():
        if op.f == "delete":
            deletes[(op.inv["recv"], op.inv["handle"])].append(op)
        elif op.f == "cmv":
            cmvs[(op.inv["recv"], op.inv["handle"])].append(op)

    def visible_again_lb(r, m, before=None):
        """Earliest time (lower bound) at which m, taken by receive r, can be visible again."""
        lb = r.t_inv + r.inv["vt"] - margin
        for c in cmvs.get((r.id, m["handle"]), []):
            if c.kind == "fail":
                continue            # definitely not applied
            if before is not None and c.t_inv >= before:
                continue
            lb = min(lb, c.t_inv + c.inv["vt"] - (margin if c.inv["vt"] > 0 else 0))
        return lb

    def certainly_deleted_at(r, m):
        """If some ok delete of m with r's handle was certainly current, its completion time."""
        best = None
        for d in deletes.get((r.id, m["handle"]), []):
            if d.kind != "ok":
                continue
            if d.t_done < visible_again_lb(r, m, before=d.t_done):
                best = d.t_done if best is None else min(best, d.t_done)
        return best

    # (a) no loss
    lost = []
    for body, s in sends.items():
        if s["status"] == "ok" and not deliveries.get(body):
            lost.append({"body": body, "queue": s["queue"], "message_ids": sorted(s["ids"]), "attempts": s["attempts"]})
    drained = all(str(v).startswith("empty") for v in drain_status.values()) if drain_status else False
    res = {"no-loss": _verdict(lost, acknowledged=sum(1 for s in sends.values() if s["status"] == "ok"),
                               unknown=sum(1 for s in sends.values() if s["status"] == "info"),
                               failed=sum(1 for s in sends.values() if s["status"] == "fail"),
                               drain=drain_status, drain_complete=drained)}

    # (b) no phantoms
    phantom, extra_copies = [], []
    for body, ds in deliveries.items():
        s = sends.get(body)
        for r, m in ds:
            where = {"body": body, "receive": r.id, "t": r.t_done, "message_id": m["message_id"], "queue": r.queue}
            if s is None:
                phantom.append({**where, "why": "never sent"})
            elif s["status"] == "fail":
                phantom.append({**where, "why": "every send attempt failed definitely (4xx, refused, or 503 which Ferry documents as nothing written)", "attempts": s["attempts"]})
            elif s["queue"] != r.queue:
                phantom.append({**where, "why": f"sent to {s['queue']}"})
            elif s["ids"] and m["message_id"] not in s["ids"] and r.queue.endswith(".fifo") is False:
                extra_copies.append(where)
    res["no-phantom"] = _verdict(phantom, extra_copies_standard=len(extra_copies),
                                 extra_copy_examples=extra_copies[:5])

    # (c) FIFO: dedup
    dup = []
    for body, s in sends.items():
        if not s["queue"].endswith(".fifo"):
            continue
        ids = set(s["ids"]) | {m["message_id"] for _, m in deliveries.get(body, [])}
        if len(ids) > 1:
            dup.append({"body": body, "message_ids": sorted(ids), "attempts": s["attempts"],
                        "deliveries": [(r.id, m["message_id"]) for r, m in deliveries.get(body, [])]})
    res["fifo-dedup"] = _verdict(dup)

    # (c) FIFO: order and group lock
    by_group = collections.defaultdict(list)      # (queue, group) -> [(recv op, [(n, msg)])]
    for r in receives:
        if not r.queue.endswith(".fifo"):
            continue
        per = collections.defaultdict(list)
        for m in r.out.get("messages", []):
            mt = FIFO_BODY.match(m["body"])
            if mt:
                per[mt.group(2)].append((int(mt.group(3)), m))
        for g, lst in per.items():
            by_group[(r.queue, g)].append((r, lst))
    body_of = {}
    for (q0, g0), recs0 in by_group.items():
        for r0, lst0 in recs0:
            for n0, m0 in lst0:
                body_of[(q0, g0, n0)] = m0["body"]

    def acked(q, g, n):
        s = sends.get(body_of.get((q, g, n)))
        return s is not None and s["status"] == "ok"

    order, lock = [], []
    for (q, g), recs in by_group.items():
        for r, lst in recs:
            ns = [n for n, _ in lst]
            if any(b <= a for a, b in zip(ns, ns[1:])):
                order.append({"queue": q, "group": g, "why": "out of order inside one response", "receive": r.id, "seqs": ns})
        recs_by_done = sorted(recs, key=lambda x: x[0].t_done)
        for r2, lst2 in recs:
            s2 = {n for n, _ in lst2}
            for r1, lst1 in recs_by_done:
                if r1.t_done >= r2.t_inv:
                    break
                if r1 is r2:
                    continue
                s1 = {n for n, _ in lst1}
                mx = max(s1)
                # j counts only if its send was acknowledged: a send whose every attempt is unknown
                # may take effect at any time after its invocation (a zombie request), so its
                # position in the group is unconstrained.
                back = sorted(j for j in s2 if j not in s1 and j < mx and acked(q, g, j))
                if back:
                    order.append({"queue": q, "group": g, "why": "delivered after a later message of its group",
                                  "earlier_receive": {"id": r1.id, "t": [r1.t_inv, r1.t_done], "seqs": sorted(s1)},
                                  "later_receive": {"id": r2.id, "t": [r2.t_inv, r2.t_done], "seqs": sorted(s2)},
                                  "went_back_to": back})
                # group lock: r1 holds the group until its last message of the group can have left flight
                new = s2 - s1
                if new:
                    held_until = None
                    for n, m in lst1:
                        gone = certainly_deleted_at(r1, m)
                        rel = min([d.t_inv for d in deletes.get((r1.id, m["handle"]), []) if d.kind != "fail"]
                                  + [visible_again_lb(r1, m)])
                        rel = min(rel, gone) if gone is not None else rel
                        held_until = rel if held_until is None else max(held_until, rel)
                    if held_until is not None and r2.t_done < held_until:
                        lock.append({"queue": q, "group": g, "holder": {"id": r1.id, "t": [r1.t_inv, r1.t_done], "seqs": sorted(s1)},
                                     "intruder": {"id": r2.id, "t": [r2.t_inv, r2.t_done], "seqs": sorted(s2)},
                                     "held_until_lb": round(held_until, 3)})
    res["fifo-order"] = _verdict(order)
    res["fifo-group-lock"] = _verdict(lock)

    # (d) delete finality and visibility
    # Standard queues are at-least-once: a message can be stored as two copies with one MessageId
    # (SQS: "a copy of the message isn't deleted on that unavailable server"). A copy's
    # ApproximateReceiveCount rises with every receive, so two deliveries with the same count are two
    # copies, and a later delivery whose count is not above an earlier one's is another copy.
    copies_evidence = {}
    for body, ds in deliveries.items():
        by_id = collections.defaultdict(list)
        for r, m in ds:
            by_id[m["message_id"]].append(m.get("count", 0))
        for mid, cs in by_id.items():
            if len([c for c in cs if c]) != len({c for c in cs if c}):
                copies_evidence[mid] = sorted(cs)
    # Receives whose outcome is unknown may have taken a copy (raising its receive count unseen).
    import bisect
    unknown_recv = collections.defaultdict(list)
    for op in ops.values():
        if op.f == "receive" and op.kind == "info":
            unknown_recv[op.queue].append(op.t_inv)
    for v in unknown_recv.values():
        v.sort()

    def second_copy_explains(r1, r2, m2, body):
        """Can delivery m2 (in r2) be a second stored copy, different from the one r1 took? Its count c
        needs c-1 earlier receives of that copy: ok deliveries of the MessageId other than r1, or
        receives of unknown outcome on the queue since the send was invoked."""
        c = m2.get("count", 0) or 0
        prior = sum(1 for r, m in deliveries[body] if r is not r1 and r is not r2
                    and m["message_id"] == m2["message_id"] and r.t_done < r2.t_inv)
        s = sends.get(body)
        t0 = min(a["t"][0] for a in s["attempts"]) if s else 0
        lst = unknown_recv.get(r2.queue, [])
        unknown = bisect.bisect_left(lst, r2.t_inv) - bisect.bisect_left(lst, t0)
        return prior + unknown >= c - 1

    final, early, allowed_copy = [], [], []
    fifo_key = lambda r, m: m["body"] if r.queue.endswith(".fifo") else m["message_id"]
    for body, ds in deliveries.items():
        for r1, m1 in ds:
            gone = certainly_deleted_at(r1, m1)
            lb = visible_again_lb(r1, m1)
            for r2, m2 in ds:
                if r2 is r1 or fifo_key(r2, m2) != fifo_key(r1, m1):
                    continue
                violating = (gone is not None and r2.t_inv > gone) or (r2.t_inv > r1.t_done and r2.t_done < lb)
                other_copy = violating and (not r1.queue.endswith(".fifo")) and (
                    (m2.get("count", 0) and m2.get("count", 0) <= m1.get("count", 0)) or m1["message_id"] in copies_evidence
                    or second_copy_explains(r1, r2, m2, body))
                if violating and other_copy:
                    allowed_copy.append({"body": body, "message_id": m2["message_id"],
                                         "first": {"id": r1.id, "t": [r1.t_inv, r1.t_done], "count": m1.get("count")},
                                         "deleted_ok_at": gone,
                                         "again": {"id": r2.id, "t": [r2.t_inv, r2.t_done], "count": m2.get("count")},
                                         "counts": copies_evidence.get(m1["message_id"])})
                    continue
                if gone is not None and r2.t_inv > gone:
                    final.append({"body": body, "message_id": m2["message_id"], "received": {"id": r1.id, "t": [r1.t_inv, r1.t_done]},
                                  "deleted_ok_at": gone, "delivered_again": {"id": r2.id, "t": [r2.t_inv, r2.t_done]}})
                elif r2.t_inv > r1.t_done and r2.t_done < lb:
                    early.append({"body": body, "message_id": m2["message_id"], "received": {"id": r1.id, "t": [r1.t_inv, r1.t_done], "vt": r1.inv["vt"]},
                                  "visible_again_lb": round(lb, 3), "delivered_again": {"id": r2.id, "t": [r2.t_inv, r2.t_done], "count": m2.get("count")},
                                  "ops_on_handle": [{"id": o.id, "f": o.f, "kind": o.kind, "t": [o.t_inv, o.t_done], "vt": o.inv.get("vt"),
                                                     "error": (o.error or {}).get("code")}
                                                    for o in cmvs.get((r1.id, m1["handle"]), []) + deletes.get((r1.id, m1["handle"]), [])]})
    res["delete-final"] = _verdict(final, standard_second_copies=len(allowed_copy), second_copy_examples=allowed_copy[:5],
                                   message_ids_with_copies=len(copies_evidence))
    res["visibility"] = _verdict(early)

    # (e) availability
    client_ops = [op for op in ops.values() if op.proc != "drain"]
    wins = windows(nemesis, end_t)
    last_client_t = max((op.t_done for op in client_ops), default=0)
    av, slow = [], []
    for idx, (kind, s, e, d) in enumerate(wins):
        inside = [op for op in client_ops if s <= op.t_inv < e]
        okn = sum(1 for op in inside if op.kind == "ok")
        nxt = wins[idx + 1][1] if idx + 1 < len(wins) else last_client_t
        rec = {}
        for f in ("send", "receive"):
            after = [op.t_done - e for op in client_ops
                     if op.kind == "ok" and op.t_inv >= e and op.f.startswith(f) and op.t_done <= nxt + 0.001]
            rec[f] = round(min(after), 3) if after else None
        row = {"kind": kind, "start": round(s, 3), "stop": round(e, 3), "detail": {k: v for k, v in d.items() if k not in ("phase", "kind")},
               "ops": len(inside), "ok_fraction": round(okn / len(inside), 3) if inside else None,
               "ok_per_s": round(sum(1 for op in client_ops if op.kind == "ok" and s <= op.t_done < e) / max(e - s, 1e-3), 1),
               "recovery_send_s": rec["send"], "recovery_receive_s": rec["receive"]}
        av.append(row)
        for f in ("send", "receive"):
            if rec[f] is None and nxt - e > recovery_limit:
                slow.append({"window": idx, "kind": kind, "op": f, "why": f"no ok {f} in {nxt - e:.1f}s after heal"})
            elif rec[f] is not None and rec[f] > recovery_limit:
                slow.append({"window": idx, "kind": kind, "op": f, "why": f"first ok {f} {rec[f]:.1f}s after heal"})
    quiet = [op for op in client_ops if not any(s <= op.t_inv < e for _, s, e, _ in wins)]
    first_t = min((op.t_inv for op in client_ops), default=0)
    quiet_s = max(1e-3, (last_client_t - first_t) - sum(e - s for _, s, e, _ in wins))
    quiet_ok_per_s = round(sum(1 for op in client_ops if op.kind == "ok" and not any(s <= op.t_done < e for _, s, e, _ in wins)) / quiet_s, 1)
    res["availability"] = _verdict(slow, windows=av,
                                   quiet_ok_fraction=round(sum(op.kind == "ok" for op in quiet) / len(quiet), 3) if quiet else None,
                                   quiet_ok_per_s=quiet_ok_per_s, recovery_limit_s=recovery_limit)

    # statistics
    cnt = collections.Counter((op.f, op.kind) for op in ops.values())
    stats = {"ops": len(ops), "by_f": {f"{f}:{k}": v for (f, k), v in sorted(cnt.items())},
             "deliveries": sum(len(v) for v in deliveries.values()),
             "redeliveries": sum(max(0, len(v) - 1) for v in deliveries.values()),
             "fault_windows": len(wins), "margin_s": margin, "duration_s": round(end_t, 3)}
    valid = all(v["valid"] for k, v in res.items())
    return {"valid": valid, "properties": res, "stats": stats}
