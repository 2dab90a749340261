"""One probe program that reads a sandbox's posture from inside, as user code.

``PROBE`` is Python run through ``POST /exec``; it prints one JSON object: identity,
capability sets, NoNewPrivs and seccomp, the verdict (errno) of every syscall the
policy denies and of ``socket`` for every address family, namespaces, the mount
table with flags, cgroup limits, rlimits, environment, open fds, ``oom_score_adj``,
and which host paths are visible. ``tests/security/test_posture_parity.py`` runs it
in a sandbox of each factory and compares.
"""

from __future__ import annotations

from sidecar.seccomp_policy import DENIED

__all__ = ["PROBE"]

_PROBE = """
import ctypes, errno, json, os, resource, socket
DENIED = %(denied)r
libc = ctypes.CDLL(None, use_errno=True)
facts = {}
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
facts["identity"] = {"uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(),
                     "groups": os.getgroups(), "user": os.environ.get("USER")}
facts["capabilities"] = {k: status[k].strip() for k in
                         ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}
facts["no_new_privs"] = status["NoNewPrivs"].strip()
facts["seccomp"] = status["Seccomp"].strip()
def verdict(result):
    return "ok" if result >= 0 else errno.errorcode.get(ctypes.get_errno(), "?")
facts["syscalls"] = {}
for name, number in sorted(DENIED.items()):
    ctypes.set_errno(0)
    facts["syscalls"][name] = verdict(libc.syscall(number, 0, 0, 0, 0, 0, 0))
facts["socket_families"] = {}
for family in range(1, 46):
    verdicts = []
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM, socket.SOCK_RAW):
        try:
            socket.socket(family, kind).close()
            verdicts.append("ok")
        except OSError as exc:
            verdicts.append(errno.errorcode.get(exc.errno, str(exc.errno)))
    facts["socket_families"][str(family)] = verdicts
facts["namespaces"] = {name: os.readlink(f"/proc/self/ns/{name}")
                       for name in sorted(os.listdir("/proc/self/ns"))}
mounts = {}
for line in open("/proc/self/mountinfo"):
    fields = line.split()
    dash = fields.index("-")
    mounts[fields[4]] = {"options": sorted(fields[5].split(",")),
                         "fstype": fields[dash + 1]}
facts["mounts"] = mounts
cgroup = {}
for name in ("memory.max", "memory.swap.max", "pids.max", "cpu.max"):
    try:
        cgroup[name] = open(f"/sys/fs/cgroup/{name}").read().strip()
    except OSError as exc:
        cgroup[name] = errno.errorcode.get(exc.errno, "?")
facts["cgroup"] = cgroup
facts["rlimits"] = {name: list(resource.getrlimit(getattr(resource, name)))
                    for name in sorted(dir(resource)) if name.startswith("RLIMIT_")}
facts["environment"] = dict(sorted(os.environ.items()))
fds = {}
for fd in sorted(os.listdir("/proc/self/fd"), key=int):
    try:
        fds[fd] = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        fds[fd] = "?"
facts["fds"] = fds
facts["oom_score_adj"] = open("/proc/self/oom_score_adj").read().strip()
visible = {}
for path in ("/root", "/home", "/var", "/srv", "/work", "/etc/shadow", "/etc/ssh", "/boot",
             "/sys/kernel", "/sys/class/net", "/dev/kmsg", "/dev/mem", "/dev/tty",
             "/proc/kcore", "/proc/sysrq-trigger", "/run", "/opt"):
    visible[path] = os.path.exists(path)
facts["visible"] = visible
facts["root_entries"] = sorted(os.listdir("/"))
facts["dev_entries"] = sorted(os.listdir("/dev"))
facts["hostname"] = socket.gethostname()
facts["interfaces"] = [name for _, name in socket.if_nameindex()]
print(json.dumps(facts, sort_keys=True))
"""
#: The probe with the policy's syscall table filled in (all-zero arguments: harmless
#: for each of them even where a factory let one through).
PROBE = _PROBE % {"denied": dict(DENIED)}
