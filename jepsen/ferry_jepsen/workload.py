"""Concurrent SQS clients (standard + FIFO queues, many groups) that record every operation."""
import hashlib
import random
import threading
import time

from .sqs import SqsClient
from .util import HarnessError, log

STD = "fj-std"
FIFO = "fj-fifo.fifo"          # DeduplicationScope=queue: one partition, one order for the queue
MAX_OPS_PER_WORKER = 10_000_000
HT = "fj-ht.fifo"              # high-throughput FIFO: several partitions, groups hashed to them
QUEUES = {
    STD: {},
    FIFO: {"FifoQueue": "true"},
    HT: {"FifoQueue": "true", "DeduplicationScope": "messageGroup", "FifoThroughputLimit": "perMessageGroupId"},
}
FIFO_QUEUES = (FIFO, HT)


def hdigest(handle):
    return hashlib.sha1(handle.encode()).hexdigest()[:12]


class Workload:
    def __init__(self, history, cluster, opts, seed):
        self.h = history
        self.cluster = cluster
        self.opts = opts
        self.stop = threading.Event()
        self.threads = []
        self.rng = random.Random(seed)
        self.clients = {i: SqsClient(n.ip, 9324, timeout=opts.op_timeout) for i, n in cluster.nodes.items()}
        self.vt = opts.visibility_timeout
        self.groups = opts.groups

    # ---- one recorded operation ----------------------------------------------------------------

    def op(self, proc, f, queue, node, action, payload, value, parse, timeout=None):
        op_id = self.h.invoke(f, proc, node, queue, value)
        kind, res = self.clients[node].call(action, payload, timeout=timeout)
        if kind == "ok":
            try:
                out = parse(res)
            except Exception as e:  # a 200 we cannot read: unknown outcome
                self.h.complete(op_id, "info", f, proc, node, queue, value, {"code": "Unparseable", "message": str(e)})
                return "info", None
            self.h.complete(op_id, "ok", f, proc, node, queue, out)
            return "ok", out
        self.h.complete(op_id, kind, f, proc, node, queue, value, res)
        if kind == "fail":
            self.stop.wait(0.1)    # a refused connection fails at once: do not spin on a dead node
        return kind, None

    def url(self, node, queue):
        return self.clients[node].queue_url(queue)

    # ---- setup ---------------------------------------------------------------------------------

    def create_queues(self, deadline_s=60):
        end = time.monotonic() + deadline_s
        for q, attrs in QUEUES.items():
            for attempt in range(60):
                node = self.rng.choice(list(self.clients))
                kind, res = self.clients[node].call("CreateQueue", {"QueueName": q, "Attributes": attrs})
                if kind == "ok":
                    break
                log.info("CreateQueue %s on n%s: %s %s", q, node, kind, res)
                if time.monotonic() > end:
                    raise HarnessError(f"could not create queue {q}: {res}")
                time.sleep(1)
            else:
                raise HarnessError(f"could not create queue {q}")
        self.h.note("queues", queues=QUEUES)

    # ---- sends ---------------------------------------------------------------------------------

    def _parse_send(self, entries, batch):
        def parse(res):
            out = []
            if not batch:
                e = entries[0]
                out.append({**e, "result": "ok", "message_id": res["MessageId"], "seq": res.get("SequenceNumber")})
                return {"entries": out}
            ok = {s["Id"]: s for s in res.get("Successful", [])}
            failed = {s["Id"]: s for s in res.get("Failed", [])}
            for k, e in enumerate(entries):
                eid = f"e{k}"
                if eid in ok:
                    out.append({**e, "result": "ok", "message_id": ok[eid]["MessageId"], "seq": ok[eid].get("SequenceNumber")})
                elif eid in failed:
                    fl = failed[eid]
                    out.append({**e, "result": "fail" if fl.get("SenderFault") else "info",
                                "error": {"code": fl.get("Code"), "message": fl.get("Message")}})
                else:
                    out.append({**e, "result": "info", "error": {"code": "MissingFromResponse"}})
            return {"entries": out}
        return parse

    def send(self, proc, rng, queue, entries):
        """entries: [{"body", "group"?, "dedup"?}]; returns the call outcome."""
        node = rng.choice(list(self.clients))
        batch = len(entries) > 1 or rng.random() < 0.2
        if batch:
            payload = {"QueueUrl": self.url(node, queue), "Entries": []}
            for k, e in enumerate(entries):
                ent = {"Id": f"e{k}", "MessageBody": e["body"]}
                if "group" in e:
                    ent["MessageGroupId"] = e["group"]
                    ent["MessageDeduplicationId"] = e["dedup"]
                payload["Entries"].append(ent)
            return self.op(proc, "send_batch", queue, node, "SendMessageBatch", payload, {"entries": entries},
                           self._parse_send(entries, True))
        e = entries[0]
        payload = {"QueueUrl": self.url(node, queue), "MessageBody": e["body"]}
        if "group" in e:
            payload["MessageGroupId"] = e["group"]
            payload["MessageDeduplicationId"] = e["dedup"]
        return self.op(proc, "send", queue, node, "SendMessage", payload, {"entries": entries},
                       self._parse_send(entries, False))

    def std_producer(self, proc, rng):
        n = 0
        for _ in range(MAX_OPS_PER_WORKER):   # bounded in count; the stop event bounds it in time
            if self.stop.is_set():
                break
            k = 1 if rng.random() < 0.6 else rng.randint(2, 10)
            entries = []
            for _ in range(k):
                n += 1
                entries.append({"body": f"S-{proc}-{n}"})
            self.send(proc, rng, STD, entries)
            self.pace(rng)

    def fifo_producer(self, proc, rng, my_groups):
        """Owns its groups, so the order of sends within a group is this thread's order. A send whose
        outcome is unknown is retried with the same deduplication ids before the group moves on."""
        nxt = {g: 0 for g in my_groups}
        for _ in range(MAX_OPS_PER_WORKER):   # bounded in count; the stop event bounds it in time
            if self.stop.is_set():
                break
            queue, group = rng.choice(my_groups)
            k = 1 if rng.random() < 0.6 else rng.randint(2, 5)
            entries = []
            for _ in range(k):
                nxt[(queue, group)] += 1
                body = f"F-{queue.split('.')[0]}-{group}-{nxt[(queue, group)]}"
                entries.append({"body": body, "group": group, "dedup": body})
            for attempt in range(self.opts.fifo_retries + 1):
                kind, _ = self.send(proc, rng, queue, entries)
                if kind == "ok" or self.stop.is_set():
                    break
                time.sleep(rng.uniform(0.1, 0.5))
            self.pace(rng)

    # ---- receives, deletes, visibility changes ----------------------------------------------------

    def _parse_receive(self, res):
        msgs = []
        for m in res.get("Messages", []) or []:
            a = m.get("Attributes", {}) or {}
            msgs.append({"body": m["Body"], "message_id": m["MessageId"], "handle": hdigest(m["ReceiptHandle"]),
                         "_handle": m["ReceiptHandle"], "count": int(a.get("ApproximateReceiveCount", 0) or 0),
                         "group": a.get("MessageGroupId"), "seq": a.get("SequenceNumber")})
        return {"messages": msgs}

    def delete(self, proc, rng, queue, recv_id, m, handle, node=None):
        node = node or rng.choice(list(self.clients))
        payload = {"QueueUrl": self.url(node, queue), "ReceiptHandle": handle}
        return self.op(proc, "delete", queue, node, "DeleteMessage", payload,
                       {"body": m["body"], "message_id": m["message_id"], "handle": m["handle"], "recv": recv_id},
                       lambda res: {"body": m["body"], "message_id": m["message_id"], "handle": m["handle"], "recv": recv_id})[0]

    def change_visibility(self, proc, rng, queue, recv_id, m, handle, vt):
        node = rng.choice(list(self.clients))
        payload = {"QueueUrl": self.url(node, queue), "ReceiptHandle": handle, "VisibilityTimeout": vt}
        v = {"body": m["body"], "message_id": m["message_id"], "handle": m["handle"], "recv": recv_id, "vt": vt}
        return self.op(proc, "cmv", queue, node, "ChangeMessageVisibility", payload, v, lambda res: v)[0]

    def consumer(self, proc, rng):
        for _ in range(MAX_OPS_PER_WORKER):   # bounded in count; the stop event bounds it in time
            if self.stop.is_set():
                break
            r = rng.random()
            queue = STD if r < 0.5 else (FIFO if r < 0.75 else HT)
            kind, recv_id, got = self.receive_recorded(proc, rng, queue)
            for m, handle in got:
                if self.stop.is_set():
                    break
                a = rng.random()
                if a < 0.75:
                    self.delete(proc, rng, queue, recv_id, m, handle)
                elif a < 0.83:
                    self.change_visibility(proc, rng, queue, recv_id, m, handle, 0)
                elif a < 0.90:
                    if self.change_visibility(proc, rng, queue, recv_id, m, handle, rng.randint(5, 30)) == "ok" \
                            and rng.random() < 0.5:
                        self.delete(proc, rng, queue, recv_id, m, handle)
                # else: leave it in flight until its visibility timeout expires
            self.pace(rng)

    def receive_recorded(self, proc, rng, queue, node=None, vt=None, wait=None, maxn=None):
        """ReceiveMessage, recorded without raw receipt handles; returns (kind, op id, [(msg, handle)])."""
        node = node or rng.choice(list(self.clients))
        vt = self.vt if vt is None else vt
        wait = rng.choice([0, 0, 1]) if wait is None else wait
        maxn = maxn or rng.randint(1, 10)
        payload = {"QueueUrl": self.url(node, queue), "MaxNumberOfMessages": maxn, "VisibilityTimeout": vt,
                   "WaitTimeSeconds": wait, "MessageSystemAttributeNames": ["All"], "AttributeNames": ["All"]}
        value = {"max": maxn, "vt": vt, "wait": wait}
        op_id = self.h.invoke("receive", proc, node, queue, value)
        kind, res = self.clients[node].call("ReceiveMessage", payload, timeout=self.opts.op_timeout + wait)
        if kind != "ok":
            self.h.complete(op_id, kind, "receive", proc, node, queue, value, res)
            if kind == "fail":
                self.stop.wait(0.1)
            return kind, op_id, []
        try:
            out = self._parse_receive(res)
        except Exception as e:
            self.h.complete(op_id, "info", "receive", proc, node, queue, value, {"code": "Unparseable", "message": str(e)})
            return "info", op_id, []
        pairs = []
        for m in out["messages"]:
            pairs.append((m, m.pop("_handle")))
        self.h.complete(op_id, "ok", "receive", proc, node, queue, {**value, "messages": out["messages"]})
        return "ok", op_id, pairs

    def pace(self, rng):
        if self.opts.op_interval > 0:
            self.stop.wait(rng.uniform(0, 2 * self.opts.op_interval))

    # ---- lifecycle -----------------------------------------------------------------------------

    def start(self):
        o = self.opts
        procs = []
        for k in range(o.std_producers):
            procs.append((f"sp{k}", self.std_producer, ()))
        all_groups = [(q, f"g{j}") for q in FIFO_QUEUES for j in range(self.groups)]
        for k in range(o.fifo_producers):
            mine = [g for idx, g in enumerate(all_groups) if idx % o.fifo_producers == k]
            procs.append((f"fp{k}", self.fifo_producer, (mine,)))
        for k in range(o.consumers):
            procs.append((f"c{k}", self.consumer, ()))
        for name, fn, args in procs:
            rng = random.Random(self.rng.random())
            t = threading.Thread(target=self._guard, args=(fn, name, rng, *args), name=name, daemon=True)
            self.threads.append(t)
            t.start()

    def _guard(self, fn, name, rng, *args):
        try:
            fn(name, rng, *args)
        except Exception:
            log.exception("worker %s crashed", name)

    def finish(self, timeout):
        self.stop.set()
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.1, deadline - time.monotonic()))
        alive = [t.name for t in self.threads if t.is_alive()]
        if alive:
            log.warning("workers still running after %ss: %s", timeout, alive)

    # ---- the final drain -----------------------------------------------------------------------

    def attrs(self, queue, node):
        kind, res = self.clients[node].call("GetQueueAttributes", {
            "QueueUrl": self.url(node, queue), "AttributeNames": ["All"]}, timeout=12)
        if kind != "ok":
            return None
        a = res.get("Attributes", {})
        return sum(int(a.get(k, 0) or 0) for k in ("ApproximateNumberOfMessages",
                                                   "ApproximateNumberOfMessagesNotVisible",
                                                   "ApproximateNumberOfMessagesDelayed"))

    def drain(self, deadline_s):
        """Receives and deletes until every queue is empty (attributes say 0 and receives come back empty
        for a while). Bounded by deadline_s overall. Returns {queue: "empty" | "not empty: ..."}."""
        rng = random.Random(7)
        end = time.monotonic() + deadline_s
        status = {}
        nodes = list(self.clients)
        for queue in QUEUES:
            empties, last_msg = 0, time.monotonic()
            result = "timeout"
            for rounds in range(100000):
                if time.monotonic() > end:
                    break
                node = nodes[rounds % len(nodes)]
                kind, recv_id, got = self.receive_recorded("drain", rng, queue, node=node, vt=self.opts.drain_vt,
                                                           wait=1, maxn=10)
                for m, handle in got:
                    self.delete("drain", rng, queue, recv_id, m, handle, node=node)
                if got:
                    empties, last_msg = 0, time.monotonic()
                    continue
                if kind != "ok":
                    time.sleep(0.5)
                    continue
                empties += 1
                if empties >= 3:
                    left = self.attrs(queue, node)
                    quiet = time.monotonic() - last_msg
                    if left == 0 and quiet > 2:
                        result = "empty"
                        break
                    if left is None and quiet > self.opts.drain_vt + self.vt + 5:
                        result = "empty (attributes unavailable; no message for %.0fs)" % quiet
                        break
                    time.sleep(1.0)
            status[queue] = result
            self.h.note("drained", queue=queue, result=result)
        return status
