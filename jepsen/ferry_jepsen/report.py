"""Run outputs: the PNG plot (throughput and latency over time, fault windows shaded) and summary.md."""
import collections
import json
import os

from .checker import parse, windows

COLORS = {"partition": "#e41a1c", "loss": "#ff7f00", "pause": "#984ea3", "crash": "#377eb8",
          "kill-many": "#4daf4a", "clock": "#a65628", "wipe-all": "#000000"}


def plot(history, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ops, nemesis, _, end_t = parse(history)
    wins = windows(nemesis, end_t)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(12, 7), sharex=True)
    fams = {"send": ("send", "send_batch"), "receive": ("receive",), "delete": ("delete",), "cmv": ("cmv",)}
    width = 1.0
    nb = int(end_t / width) + 1
    for fam, fs in fams.items():
        buckets = [0] * nb
        for op in ops.values():
            if op.f in fs and op.kind == "ok":
                buckets[min(nb - 1, int(op.t_done / width))] += 1
        ax1.plot([i * width for i in range(nb)], buckets, label=f"{fam} ok/s", lw=1)
    ax1.set_ylabel("ok operations / s")
    ax1.legend(loc="upper right", fontsize=8)
    marks = {"ok": ("o", 2, 0.4), "fail": ("x", 12, 0.9), "info": ("^", 12, 0.9)}
    colors = {"send": "#1b9e77", "receive": "#d95f02", "delete": "#7570b3", "cmv": "#e7298a"}
    for kind, (mk, sz, al) in marks.items():
        for fam, fs in fams.items():
            xs, ys = [], []
            for op in ops.values():
                if op.f in fs and op.kind == kind:
                    xs.append(op.t_inv)
                    ys.append(max(1e-4, op.t_done - op.t_inv) * 1000)
            if xs:
                ax2.scatter(xs, ys, s=sz, marker=mk, alpha=al, color=colors[fam], label=f"{fam} {kind}", linewidths=0.6)
    ax2.set_yscale("log")
    ax2.set_ylabel("latency ms (log)")
    ax2.set_xlabel("seconds since start")
    ax2.legend(loc="upper right", fontsize=7, ncol=3)
    seen = set()
    for kind, s, e, _ in wins:
        for ax in (ax1, ax2):
            ax.axvspan(s, e, color=COLORS.get(kind, "#999999"), alpha=0.15,
                       label=None if (kind in seen or ax is ax2) else f"fault: {kind}")
        seen.add(kind)
    drains = [op.t_inv for op in ops.values() if op.proc == "drain"]
    if drains:
        for ax in (ax1, ax2):
            ax.axvline(min(drains), color="k", ls="--", lw=0.8)
        ax1.text(min(drains), ax1.get_ylim()[1] * 0.9, " drain", fontsize=8)
    ax1.legend(loc="upper right", fontsize=8)
    ax1.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def summary(result, meta, path):
    p = result["properties"]
    st = result["stats"]
    lines = [f"# Ferry fault-injection run `{meta['name']}`", "",
             f"- faults: **{', '.join(meta['faults']) or 'none'}**, nodes: {meta['nodes']}, workload {meta['duration']}s, seed {meta['seed']}",
             f"- binary: `{meta['binary']}`", f"- verdict: **{'PASS' if result['valid'] else 'FAIL'}**", "",
             "| property | verdict | count | notes |", "|---|---|---|---|"]
    notes = {
        "no-loss": lambda v: f"{v['acknowledged']} acknowledged, {v['unknown']} unknown, {v['failed']} failed sends; drain {'complete' if v['drain_complete'] else 'INCOMPLETE'}",
        "no-phantom": lambda v: f"{v['extra_copies_standard']} extra standard copies (allowed)",
        "delete-final": lambda v: f"{v['standard_second_copies']} redeliveries explained by a second stored copy of a standard message (SQS-allowed); {v['message_ids_with_copies']} MessageIds seen as 2+ copies",
        "availability": lambda v: f"outside faults: ok fraction {v['quiet_ok_fraction']}, {v.get('quiet_ok_per_s')} ok ops/s; recovery limit {v['recovery_limit_s']}s",
    }
    for k, v in p.items():
        lines.append(f"| {k} | {'ok' if v['valid'] else '**VIOLATED**'} | {v['count']} | {notes.get(k, lambda v: '')(v)} |")
    lines += ["", f"Operations: {st['ops']} ({', '.join(f'{k} {n}' for k, n in st['by_f'].items())}); "
                  f"{st['deliveries']} deliveries, {st['redeliveries']} redeliveries; clock margin {st['margin_s']}s.", ""]
    wins = p["availability"]["windows"]
    if wins:
        lines += ["ok fraction = ok / all operations invoked in the window; ok ops/s = ok completions per second in the window "
                  "(a client thread blocked on a 10-15 s timeout invokes nothing, so compare ok ops/s with the rate outside faults).", "",
                  "| # | fault | start s | stop s | detail | ops invoked | ok fraction | ok ops/s | first ok send after heal (s) | first ok receive after heal (s) |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for i, w in enumerate(wins):
            lines.append(f"| {i} | {w['kind']} | {w['start']} | {w['stop']} | `{json.dumps(w['detail'])}` | {w['ops']} | "
                         f"{w['ok_fraction']} | {w.get('ok_per_s')} | {w['recovery_send_s']} | {w['recovery_receive_s']} |")
    bad = {k: v["examples"][:3] for k, v in p.items() if not v["valid"]}
    if bad:
        lines += ["", "## Violations (first examples)", "", "```json", json.dumps(bad, indent=1)[:6000], "```"]
    lines += ["", "Files: `history.jsonl`, `verdict.json`, `plot.png`, `nodes/n*/ferry.log`.", ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return "\n".join(lines)
