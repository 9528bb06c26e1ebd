"""Process hardening of the node: no core dumps, no ptrace, no new privileges, locked memory.

Memory is locked where allowed, and a seccomp filter is loaded once start-up is over (DESIGN.md;
SECURITY.md N2, N3).

Not pure: it changes this process. Two phases:

* `harden()` at the very start, before any request data can exist: RLIMIT_CORE (0, 0),
  PR_SET_DUMPABLE 0 (no core, and /proc/PID/mem and ptrace closed to same-uid processes without
  CAP_SYS_PTRACE), PR_SET_NO_NEW_PRIVS 1, and mlockall(MCL_CURRENT | MCL_FUTURE) when
  RLIMIT_MEMLOCK is unlimited (otherwise reported "unavailable": locking under a finite limit
  would make later allocations fail).
* `seal_syscalls()` once the sockets listen and the model is loaded: a libseccomp filter,
  synchronised to every thread (TSYNC), that makes ptrace, process_vm_readv/writev, execve,
  execveat, kexec_load, kexec_file_load, bpf and listen fail with EPERM.

Each measure is reported as (measure, "applied" | "unavailable") for the audit log; none is
silently skipped.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import resource

PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38
MCL_CURRENT, MCL_FUTURE = 1, 2
DENIED_SYSCALLS = ("ptrace", "process_vm_readv", "process_vm_writev", "execve", "execveat",
                   "kexec_load", "kexec_file_load", "bpf", "listen")

Report = list[tuple[str, str]]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _prctl(option: int, value: int) -> bool:
    return int(_libc().prctl(option, value, 0, 0, 0)) == 0


def harden() -> Report:
    """Apply the start-up measures (module docstring); return what was applied."""
    report: Report = []
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    report.append(("core", "applied"))
    report.append(("dumpable", "applied" if _prctl(PR_SET_DUMPABLE, 0) else "unavailable"))
    report.append(("no_new_privs",
                   "applied" if _prctl(PR_SET_NO_NEW_PRIVS, 1) else "unavailable"))
    soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    locked = (soft == resource.RLIM_INFINITY
              and int(_libc().mlockall(MCL_CURRENT | MCL_FUTURE)) == 0)
    report.append(("mlock", "applied" if locked else "unavailable"))
    return report


def seal_syscalls() -> Report:
    """Load the seccomp filter (module docstring) on every thread of the process."""
    import pyseccomp  # type: ignore[import-untyped]  # noqa: PLC0415

    try:
        syscall_filter = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
        syscall_filter.set_attr(pyseccomp.Attr.CTL_TSYNC, 1)
        for name in DENIED_SYSCALLS:
            syscall_filter.add_rule(pyseccomp.ERRNO(errno.EPERM), name)
        syscall_filter.load()
    except (OSError, RuntimeError, ValueError):
        return [("seccomp", "unavailable")]
    return [("seccomp", "applied")]


def is_dumpable() -> bool:
    """PR_GET_DUMPABLE of this process."""
    return int(_libc().prctl(3, 0, 0, 0, 0)) == 1



