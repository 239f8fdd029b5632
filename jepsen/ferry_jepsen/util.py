"""Small helpers: bounded command execution and condition waits with deadlines."""
import logging
import shutil
import subprocess
import time

log = logging.getLogger("ferry-jepsen")


class HarnessError(RuntimeError):
    pass


def sh(args, timeout=20.0, check=True, quiet=False):
    """Runs a command (a list) with a timeout; returns CompletedProcess."""
    try:
        p = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise HarnessError(f"command timed out after {timeout}s: {' '.join(args)}") from e
    if check and p.returncode != 0:
        raise HarnessError(f"command failed ({p.returncode}): {' '.join(args)}: {p.stderr.strip()}")
    if not quiet and p.returncode != 0:
        log.debug("command %s -> %s %s", args, p.returncode, p.stderr.strip())
    return p


def wait_until(cond, timeout, interval=0.2, what="condition"):
    """Polls cond() until it returns a truthy value or the deadline passes; returns the value or None."""
    deadline = time.monotonic() + timeout
    n = 0
    max_iter = int(timeout / max(interval, 0.01)) + 10
    while n < max_iter:
        n += 1
        try:
            v = cond()
        except Exception as e:  # the condition's own errors just mean "not yet"
            log.debug("waiting for %s: %s", what, e)
            v = None
        if v:
            return v
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    return None


def require_tools(need_clock):
    """Fails clearly when a tool the harness needs is missing."""
    missing = []
    for t in ("ip",):
        if shutil.which(t) is None:
            missing.append(t)
    if shutil.which("iptables") is None and shutil.which("nft") is None:
        missing.append("iptables or nft")
    if need_clock and libfaketime_path() is None:
        missing.append("faketime (libfaketime)")
    if missing:
        raise HarnessError(
            "missing tools: " + ", ".join(missing) + " — run jepsen/install-deps (apt-get install -y iproute2 iptables nftables faketime)")
    import os
    if os.geteuid() != 0:
        raise HarnessError("the harness must run as root (network namespaces, iptables)")


def libfaketime_path():
    import glob
    for pat in ("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
                "/usr/lib/*/faketime/libfaketimeMT.so.1",
                "/usr/lib/faketime/libfaketimeMT.so.1",
                "/usr/local/lib/faketime/libfaketimeMT.so.1"):
        hits = glob.glob(pat)
        if hits:
            return hits[0]
    return None
