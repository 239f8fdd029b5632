#!/usr/bin/env python3
"""Ferry's fault-injection suite. See jepsen/README.md. Run as root:
    jepsen/run.py --faults partition --nodes 5 --duration 60
    jepsen/run.py --ci
"""
import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
venv_py = os.path.join(here, ".venv", "bin", "python")
if os.path.exists(venv_py) and os.path.realpath(sys.prefix) != os.path.realpath(os.path.join(here, ".venv")) \
        and not os.environ.get("FJ_NO_VENV"):
    os.execv(venv_py, [venv_py, os.path.abspath(__file__), *sys.argv[1:]])
sys.path.insert(0, here)

from ferry_jepsen.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
