"""N2: a same-uid PTRACE_ATTACH from another process against `hushcc node serve` gets EPERM.

The attacker is a real process with the node's uid and no CAP_SYS_PTRACE (when the tests run as
root, a launcher drops it from the bounding set before exec, so the attacker and its children hold
the same capabilities, which the kernel's ptrace check compares). It starts two children itself,
so a Yama `ptrace_scope` of 1 (descendants only) changes nothing: the node as a user starts it
(`hushcc node serve`, hardened: not dumpable, so the kernel refuses the attach) and, the positive
twin, a plain unhardened Python child of the same uid, which the same attach call does trace.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

LAUNCHER = r"""
import ctypes, os, sys
libc = ctypes.CDLL("libc.so.6", use_errno=True)
libc.prctl(24, 19, 0, 0, 0)  # PR_CAPBSET_DROP CAP_SYS_PTRACE: gone after exec (fails: not held)
os.execv(sys.executable, [sys.executable, "-c", sys.argv[1], *sys.argv[2:]])
"""

ATTACKER = r"""
import ctypes, json, os, select, subprocess, sys, time
libc = ctypes.CDLL("libc.so.6", use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
libc.ptrace.restype = ctypes.c_long
PTRACE_ATTACH, PTRACE_DETACH = 16, 17

def cap_ptrace():
    for line in open("/proc/self/status"):
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> 19 & 1)

def ready(child, marker):
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if select.select([child.stdout], [], [], 1.0)[0]:
            return child.stdout.readline().startswith(marker)
    return False

def attach(pid):
    if libc.ptrace(PTRACE_ATTACH, pid, None, None) == 0:
        os.waitpid(pid, 0)  # the tracee stops; let it go again
        libc.ptrace(PTRACE_DETACH, pid, None, None)
        return 0
    return ctypes.get_errno()

node = subprocess.Popen([sys.executable, "-m", "app", "node", "serve", "--host", "127.0.0.1",
                         "--port", "0", "--tiny-model"], stdout=subprocess.PIPE,
                        stderr=subprocess.DEVNULL, text=True)
twin = subprocess.Popen([sys.executable, "-c", "import time; print('ready', flush=True); "
                         "time.sleep(300)"], stdout=subprocess.PIPE, text=True)
out = {"cap_sys_ptrace": cap_ptrace(), "node_ready": ready(node, "listening on "),
       "twin_ready": ready(twin, "ready")}
out["node"], out["twin"] = attach(node.pid), attach(twin.pid)
out["node_alive"] = node.poll() is None
for child in (node, twin):
    child.terminate()
    child.wait(timeout=60)
out["node_exit"] = node.returncode
print(json.dumps(out), flush=True)
"""


def test_same_uid_ptrace_attach_to_node_is_refused_n2(tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path), "TMPDIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", LAUNCHER, ATTACKER], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["cap_sys_ptrace"] is False  # a same-uid attacker without the capability
    assert result["node_ready"]
    assert result["twin_ready"]
    assert result["twin"] == 0  # positive twin: the same attach traces an unhardened child
    assert result["node"] == errno.EPERM  # the hardened node: refused by the kernel
    assert result["node_alive"]
    assert result["node_exit"] == 0  # and it still drains and exits 0 on SIGTERM
