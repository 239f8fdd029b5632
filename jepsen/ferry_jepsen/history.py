"""The history: every operation's invocation and completion as JSON lines.

Line shapes:
  {"id", "type": "invoke", "f", "proc", "node", "queue", "t", "value"}
  {"id", "type": "ok"|"fail"|"info", "f", "proc", "node", "queue", "t", "value", "error"?}
  {"type": "nemesis", "t", "value": {"phase": "start"|"stop", "kind", ...}}
`t` is seconds since the start of the run (monotonic clock). "info" means the outcome is unknown."""
import itertools
import json
import threading
import time


class History:
    def __init__(self, path):
        self.path = path
        self.f = open(path, "w")
        self.lock = threading.Lock()
        self.t0 = time.monotonic()
        self.ids = itertools.count(1)
        self.ops = []

    def now(self):
        return round(time.monotonic() - self.t0, 6)

    def _write(self, rec):
        with self.lock:
            self.ops.append(rec)
            self.f.write(json.dumps(rec, separators=(",", ":")) + "\n")

    def invoke(self, f, proc, node, queue, value):
        op_id = next(self.ids)
        self._write({"id": op_id, "type": "invoke", "f": f, "proc": proc, "node": node,
                     "queue": queue, "t": self.now(), "value": value})
        return op_id

    def complete(self, op_id, kind, f, proc, node, queue, value, error=None):
        rec = {"id": op_id, "type": kind, "f": f, "proc": proc, "node": node, "queue": queue,
               "t": self.now(), "value": value}
        if error:
            rec["error"] = error
        self._write(rec)

    def nemesis(self, phase, kind, **detail):
        self._write({"type": "nemesis", "t": self.now(), "value": {"phase": phase, "kind": kind, **detail}})

    def note(self, what, **detail):
        self._write({"type": "note", "t": self.now(), "value": {"what": what, **detail}})

    def close(self):
        with self.lock:
            self.f.flush()
            self.f.close()


def load(path):
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                out.append(json.loads(line))
    return out
