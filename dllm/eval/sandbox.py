"""Run model-written Python confined, and learn whether it ran to its end.

Each program runs in a fresh interpreter (``python -I -S``) under a small supervisor process:

* cwd, ``HOME`` and ``TMPDIR`` are a fresh temporary folder, deleted afterwards; the environment is
  emptied down to a minimal ``PATH``;
* the program's process has resource limits: address space (``RLIMIT_AS``), CPU seconds
  (``RLIMIT_CPU``), file size (``RLIMIT_FSIZE``), processes (``RLIMIT_NPROC``, a few above what the
  user already runs; root is exempt from this one), no core files;
* the supervisor is a child subreaper (``PR_SET_CHILD_SUBREAPER``): every descendant, even one
  that left the process group with ``setsid()``, comes back to it and is killed with the program's
  process group at the timeout or as soon as the program ends, so none survives;
* with bubblewrap (``bwrap``) installed and working, the whole thing also runs in new namespaces:
  no network, a read-only root, private ``/tmp`` and an empty home.

The verdict comes from the harness, not from the program's output or exit status: the parent
writes a random token into a pipe that the harness reads only after the program (tests and
``check(...)`` included) has run to its end without an exception, and writes back on a second
pipe. A program that prints a sentinel or exits early with status 0 never sends the token.
"""

from __future__ import annotations

import functools
import hmac
import json
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass

SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True)
class Limits:
    memory_bytes: int = 1 << 30  # RLIMIT_AS
    file_bytes: int = 16 << 20  # RLIMIT_FSIZE: largest file the program may write
    extra_processes: int = 16  # RLIMIT_NPROC above the user's current count
    cpu_s: float | None = None  # RLIMIT_CPU; None: the wall-clock timeout rounded up


# Runs as ``python -I -S -c SUPERVISOR <json>``: fork the program's process, wait, kill every descendant.
SUPERVISOR = r'''
import ctypes, json, os, resource, signal, sys, time
cfg = json.loads(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: orphaned descendants are re-parented to us
libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG: die with the evaluating process

def user_processes():
    n, uid = 0, os.getuid()
    for p in os.listdir("/proc"):
        try:
            if p.isdigit() and os.stat("/proc/" + p).st_uid == uid:
                n += 1
        except OSError:
            pass
    return n

def children():
    me, kids = str(os.getpid()), []
    for p in os.listdir("/proc"):
        try:
            if p.isdigit() and open("/proc/%s/stat" % p).read().rsplit(")", 1)[1].split()[1] == me:
                kids.append(int(p))
        except (OSError, IndexError):
            pass
    return kids

nproc = user_processes() + cfg["extra_processes"]
pid = os.fork()
if pid == 0:
    try:
        os.setpgid(0, 0)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)
        for name, value in (("RLIMIT_AS", cfg["memory_bytes"]), ("RLIMIT_FSIZE", cfg["file_bytes"]),
                            ("RLIMIT_CPU", cfg["cpu_s"]), ("RLIMIT_NPROC", nproc), ("RLIMIT_CORE", 0)):
            resource.setrlimit(getattr(resource, name), (value, value))
        with open(cfg["program"], encoding="utf-8") as f:
            code = compile(f.read(), "program.py", "exec")
        exec(code, {"__name__": "__main__", "__builtins__": __builtins__})
        os.write(cfg["verdict_fd"], os.read(cfg["token_fd"], 64))  # reached only when the program ran to its end
    except BaseException:
        pass
    os._exit(0)
os.close(cfg["token_fd"])
os.close(cfg["verdict_fd"])
deadline = time.monotonic() + cfg["timeout"]
while time.monotonic() < deadline and os.waitpid(pid, os.WNOHANG)[0] == 0:
    time.sleep(0.005)
for _ in range(2000):  # the program's group, then whatever is left (re-parented here), until none
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
    kids = children()
    for k in kids:
        try:
            os.kill(k, signal.SIGKILL)
        except OSError:
            pass
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                break
        except ChildProcessError:
            break
    if not kids:
        break
    time.sleep(0.001)
'''


def bwrap_command(home: str) -> list[str]:
    """bubblewrap around the interpreter: new namespaces (no network), read-only root, private
    /tmp and home, the sandbox folder the only writable place."""
    cmd = ["bwrap", "--die-with-parent", "--new-session", "--unshare-all", "--ro-bind", "/", "/", "--dev", "/dev",
           "--proc", "/proc", "--tmpfs", "/tmp"]
    real_home = os.path.expanduser("~")
    if real_home not in ("/", "") and os.path.isdir(real_home):
        cmd += ["--tmpfs", real_home]
        for keep in {sys.base_prefix, sys.prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable))}:
            if keep.startswith(real_home.rstrip("/") + "/"):  # an interpreter installed under the home
                cmd += ["--ro-bind", keep, keep]
    return cmd + ["--bind", home, home, "--chdir", home]


def _run(program: str, timeout: float, limits: Limits, wrapper) -> bool:
    token = secrets.token_hex(16).encode()
    with tempfile.TemporaryDirectory(prefix="dllm-sandbox-", ignore_cleanup_errors=True) as home:
        path = os.path.join(home, "program.py")
        with open(path, "w", encoding="utf-8") as f:
            f.write(program)
        token_r, token_w = os.pipe()  # parent -> harness, read after the program ends
        verdict_r, verdict_w = os.pipe()  # harness -> parent
        os.write(token_w, token)
        os.close(token_w)
        cfg = {**asdict(limits), "cpu_s": int(limits.cpu_s or math.ceil(timeout)) or 1, "timeout": timeout,
               "program": path, "token_fd": token_r, "verdict_fd": verdict_w}
        env = {"PATH": SAFE_PATH, "HOME": home, "TMPDIR": home, "LANG": "C.UTF-8"}
        cmd = (wrapper(home) if wrapper else []) + [sys.executable, "-I", "-S", "-c", SUPERVISOR, json.dumps(cfg)]
        try:
            proc = subprocess.Popen(cmd, cwd=home, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, pass_fds=(token_r, verdict_w), start_new_session=True)
        finally:
            os.close(token_r)
            os.close(verdict_w)
        try:
            proc.wait(timeout + 10)
        except subprocess.TimeoutExpired:  # the supervisor itself hung: its whole group goes
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        os.set_blocking(verdict_r, False)
        try:
            said = os.read(verdict_r, len(token) + 1)
        except BlockingIOError:
            said = b""
        finally:
            os.close(verdict_r)
    return hmac.compare_digest(said, token)


@functools.lru_cache(maxsize=1)
def isolation() -> str | None:
    """"bwrap" when bubblewrap is installed and a trivial program passes under it, else None."""
    if shutil.which("bwrap") is None:
        return None
    try:
        return "bwrap" if _run("pass\n", 10.0, Limits(), bwrap_command) else None
    except OSError:
        return None


def sandbox_note() -> str:
    if isolation():
        return ("humaneval: model-written code runs under bubblewrap (no network, read-only root, private /tmp and "
                "home) with memory, CPU, file-size and process limits")
    found = ("bubblewrap is installed but did not start here" if shutil.which("bwrap")
             else "bubblewrap (bwrap) not found")
    return (f"humaneval: {found}: model-written code runs in a child process with memory, CPU, file-size and process "
            "limits, a temporary home and an empty environment only (no filesystem or network isolation)")


def announce() -> None:
    """The note, on stderr, at the start of an eval that runs model-written code."""
    print(sandbox_note(), file=sys.stderr)


def run_program(program: str, timeout: float = 10.0, limits: Limits = Limits()) -> bool:
    """True when ``program`` runs to its end without an exception within ``timeout`` seconds,
    confined as the module docstring says."""
    return _run(program, timeout, limits, bwrap_command if isolation() else None)
