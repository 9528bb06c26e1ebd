"""Process hardening, each measure checked in a fresh subprocess, with its positive twin (N2, N3).

The twin runs the same probe without hardening and must see the opposite: a core file, a
dumpable process, ptrace/execve/listen allowed. The attach from another process against the real
`hushcc node serve`, with its twin, is `test_ptrace_attach.py`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from node.hardening import DENIED_SYSCALLS

PROBE = r"""
import ctypes, errno, json, os, resource, socket, sys
libc = ctypes.CDLL("libc.so.6", use_errno=True)
if sys.argv[1] == "hardened":
    from node.hardening import harden, seal_syscalls
    report = harden() + seal_syscalls()
else:
    report = []
def err(rc):
    return 0 if rc == 0 else ctypes.get_errno()
out = {"report": report, "core": resource.getrlimit(resource.RLIMIT_CORE),
       "dumpable": libc.prctl(3, 0, 0, 0, 0), "nnp": libc.prctl(39, 0, 0, 0, 0)}
pid = os.fork()
if pid == 0:
    os._exit(err(libc.ptrace(0, 0, 0, 0)))  # PTRACE_TRACEME
out["ptrace"] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
pid = os.fork()
if pid == 0:
    try:
        os.execv("/bin/true", ["/bin/true"])
    except OSError as exc:
        os._exit(exc.errno)
out["execve"] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
s = socket.socket(); s.bind(("127.0.0.1", 0))
try:
    s.listen(); out["listen"] = 0
except OSError as exc:
    out["listen"] = exc.errno
buf = ctypes.create_string_buffer(8)
class IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
local = IoVec(ctypes.addressof(buf), 8)
remote = IoVec(ctypes.addressof(buf), 8)
rc = libc.process_vm_readv(os.getpid(), ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
out["process_vm_readv"] = 0 if rc == 8 else ctypes.get_errno()
print(json.dumps(out), flush=True)
if len(sys.argv) > 2:
    if sys.argv[1] != "hardened":  # the twin: allow a core, as a careless process would
        resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY,) * 2)
    os.kill(os.getpid(), 11)  # SIGSEGV
"""


def probe(mode: str, cwd: Path, *, crash: bool = False) -> dict[str, object]:
    args = [sys.executable, "-c", PROBE, mode, *(["crash"] if crash else [])]
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
    if crash:
        assert done.returncode == -11
    result: dict[str, object] = json.loads(done.stdout.splitlines()[0])
    return result


def test_hardened_process_denies_each_measure_n2(tmp_path: Path) -> None:
    hardened = probe("hardened", tmp_path)
    assert hardened["core"] == [0, 0]
    assert hardened["dumpable"] == 0
    assert hardened["nnp"] == 1
    for syscall in ("ptrace", "execve", "listen", "process_vm_readv"):
        assert hardened[syscall] == 1, syscall  # EPERM from the seccomp filter
    assert ["seccomp", "applied"] in hardened["report"]  # type: ignore[operator]


def test_unhardened_twin_allows_each_measure(tmp_path: Path) -> None:
    twin = probe("plain", tmp_path)
    assert twin["dumpable"] == 1
    assert twin["nnp"] == 0
    for syscall in ("ptrace", "execve", "listen", "process_vm_readv"):
        assert twin[syscall] == 0, syscall


def test_segfault_leaves_no_core_n2(tmp_path: Path) -> None:
    if Path("/proc/sys/kernel/core_pattern").read_text().strip() != "core":
        pytest.skip("core_pattern is not a plain file name here: the twin could not observe one")
    (tmp_path / "twin").mkdir()
    (tmp_path / "hardened").mkdir()
    probe("plain", tmp_path / "twin", crash=True)
    assert list((tmp_path / "twin").iterdir()), "the twin must leave a core (positive twin)"
    probe("hardened", tmp_path / "hardened", crash=True)
    assert not list((tmp_path / "hardened").iterdir())


def test_filter_lists_the_documented_syscalls() -> None:
    assert set(DENIED_SYSCALLS) >= {"ptrace", "process_vm_readv", "process_vm_writev", "execve",
                                    "execveat", "kexec_load", "kexec_file_load", "bpf", "listen"}

