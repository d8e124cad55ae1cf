#!/usr/bin/env python3
"""A single-node SLURM on loopback, for trying the recipe here and for the tests.

Starts ``munged``, ``slurmctld`` and ``slurmd`` (Debian's ``slurm-wlm`` and ``munge``) as root in
a private directory: its own ``slurm.conf``/``cgroup.conf``, munge key and socket, state, spool,
logs and pid files, and free ports on 127.0.0.1.  Nothing outside that directory is read or
written (``/etc/slurm`` and ``/etc/munge`` are untouched); the client commands (``sbatch``,
``squeue``, dask-jobqueue's ``SLURMCluster``) find it through ``SLURM_CONF``.

::

    python3 deploy/slurm/local_slurm.py --check   # start, run one job, stop; print why not
    python3 deploy/slurm/local_slurm.py --shell   # start, print SLURM_CONF, stop on Ctrl-C

From Python (the tests do this)::

    with LocalSlurm() as slurm:           # SlurmUnavailable(reason) if it cannot start
        os.environ.update(slurm.env)      # SLURM_CONF for sbatch/squeue/scancel
        ...

Standard library only, so ``.ci/run`` can call it before the virtual environment exists.
Stopping cancels every job, waits for them to end, stops the daemons by their pid files and
kills whatever process still carries this cluster's ``SLURM_CONF`` (job steps, dask workers).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: Debian packages that provide what :class:`LocalSlurm` runs
APT_PACKAGES = ("slurm-wlm", "munge")
#: how long to wait for the node to come up (seconds)
START_TIMEOUT = 60.0
#: how long to wait for cancelled jobs and stopped daemons (seconds)
STOP_TIMEOUT = 30.0


class SlurmUnavailable(RuntimeError):
    """SLURM cannot start here; the message says why (missing package, not root, a daemon's log)."""


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _tail(path: Path, lines: int = 5) -> str:
    """The last error lines of a daemon's log (else its last lines), on one line."""
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    errors = [t for t in text if any(w in t.lower() for w in ("error", "fatal", "denied"))]
    picked = (errors or text)[-lines:]
    return " | ".join(picked) if picked else "(empty log)"


def _memory_mb() -> int:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 1024


def missing() -> str | None:
    """Why SLURM cannot start on this machine before trying, or ``None``.

    Examples
    --------
    >>> missing() is None or isinstance(missing(), str)
    True
    """
    if sys.platform != "linux":
        return f"a local SLURM needs Linux (this is {sys.platform})"
    tools = ["munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo"]
    absent = [t for t in tools if shutil.which(t, path=os.environ.get("PATH", "") +
                                               ":/usr/sbin:/sbin") is None]
    if absent:
        return (f"{', '.join(absent)} not found: apt-get install "
                f"{' '.join(APT_PACKAGES)}")
    if os.geteuid() != 0:
        return "slurmd must run as root to launch jobs (this process is not root)"
    return None


def _which(name: str) -> str:
    found = shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if found is None:
        raise SlurmUnavailable(f"{name} not found: apt-get install {' '.join(APT_PACKAGES)}")
    return found


class LocalSlurm:
    """munged + slurmctld + slurmd for one node on 127.0.0.1, in a private directory.

    Parameters
    ----------
    root : path, optional
        Directory for every file the daemons use (created; default: a new temporary directory,
        removed by :meth:`stop`). Keep it short: the munge socket path must fit in 107 bytes.
    cpus : int, optional
        CPUs the node offers (default: ``os.cpu_count()``; more than the machine has is allowed,
        ``SlurmdParameters=config_overrides``).
    memory_mb : int, optional
        The node's ``RealMemory`` (default: the machine's, so ``--mem`` requests fit).
    timeout : float
        Seconds to wait for the node to become idle.

    Examples
    --------
    >>> slurm = LocalSlurm()
    >>> sorted(slurm.env)
    ['SLURM_CONF']
    >>> slurm.stop()  # nothing started: a no-op
    """

    def __init__(self, root: str | os.PathLike | None = None, *, cpus: int | None = None,
                 memory_mb: int | None = None, timeout: float = START_TIMEOUT):
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="dfslurm-", dir="/tmp") if root is None
                         else root).resolve()
        self.cpus = int(cpus or os.cpu_count() or 1)
        self.memory_mb = int(memory_mb or max(_memory_mb() - 256, 256))
        self.timeout = float(timeout)
        self.host = socket.gethostname().split(".")[0]
        self.conf = self.root / "etc" / "slurm.conf"
        self.munge_socket = self.root / "munge" / "munge.socket"
        self.env = {"SLURM_CONF": str(self.conf)}
        self._procs: dict[str, subprocess.Popen] = {}
        self.started = False
        self.start_seconds: float | None = None

    # ------------------------------------------------------------------ files

    def _write_files(self) -> None:
        for sub in ("etc", "munge", "state", "spool", "log", "run"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        os.chmod(self.root / "munge", 0o755)  # munged wants its socket's directory searchable
        key = self.root / "munge" / "munge.key"
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(os.urandom(1024))
        ctld_port, slurmd_port = _free_ports(2)
        r = self.root
        self.conf.write_text(f"""\
# written by deploy/slurm/local_slurm.py: one node on loopback, everything under {r}
ClusterName=dftest
SlurmctldHost={self.host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket}
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool/slurmd-%n
SlurmctldPidFile={r}/run/slurmctld.pid
SlurmdPidFile={r}/run/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
MailProg=/bin/true
KillWait=5
MessageTimeout=10
SlurmdTimeout=60
InactiveLimit=0
SlurmdParameters=config_overrides
NodeName={self.host} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory_mb} State=UNKNOWN
PartitionName=debug Nodes={self.host} Default=YES MaxTime=INFINITE State=UP
""")
        (self.root / "etc" / "cgroup.conf").write_text(
            "CgroupPlugin=autodetect\nIgnoreSystemd=yes\n")

    # ------------------------------------------------------------------ commands

    def run(self, *cmd: str, timeout: float = 20.0, check: bool = True
            ) -> subprocess.CompletedProcess:
        """Run a SLURM client command against this cluster (``SLURM_CONF`` set); text output.

        Examples
        --------
        >>> with LocalSlurm() as slurm:  # doctest: +SKIP
        ...     print(slurm.run("sinfo", "-h", "-o", "%T").stdout.strip())
        idle
        """
        env = {**os.environ, **self.env}
        return subprocess.run(list(cmd), env=env, capture_output=True, text=True,
                              timeout=timeout, check=check)

    def _daemon(self, name: str, cmd: list[str]) -> None:
        """Start ``cmd`` under :func:`_reap` (which reaps the job steps slurmd leaves behind)."""
        log = open(self.root / "log" / f"{name}.stdout", "ab")  # noqa: SIM115 (Popen keeps it)
        env = {**os.environ, **self.env}
        self._procs[name] = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--reap", "--", *cmd],
            stdout=log, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL,
            start_new_session=True)
        log.close()

    def _why(self, what: str) -> SlurmUnavailable:
        logs = []
        try:
            node = self.run("sinfo", "-h", "-N", "-o", "%T %E", timeout=5, check=False)
            if node.returncode == 0 and node.stdout.strip():
                what += f" (node state: {node.stdout.strip()})"
        except (subprocess.TimeoutExpired, OSError):
            pass
        for name, proc in self._procs.items():
            state = "running" if proc.poll() is None else f"exited {proc.returncode}"
            log = self.root / "log" / f"{name}.log"
            if not log.exists():
                log = self.root / "log" / f"{name}.stdout"
            logs.append(f"{name} ({state}): {_tail(log)}")
        return SlurmUnavailable(f"{what}; " + "; ".join(logs))

    def _check_alive(self, what: str) -> None:
        for proc in self._procs.values():
            if proc.poll() is not None:
                raise self._why(what)

    def start(self) -> LocalSlurm:
        """Start the daemons and wait (``timeout``) for the node to be idle.

        Raises
        ------
        SlurmUnavailable
            With the reason: a missing package, not root, or the failing daemon's log lines.
            The daemons started so far are stopped first.
        """
        reason = missing()
        if reason:
            self.stop()  # removes a temporary root
            raise SlurmUnavailable(reason)
        t0 = time.monotonic()
        try:
            self._write_files()
            r = self.root
            self._daemon("munged", [
                _which("munged"), "--foreground", "--force",
                f"--socket={self.munge_socket}", f"--key-file={r}/munge/munge.key",
                f"--pid-file={r}/run/munged.pid", f"--log-file={r}/log/munged.log",
                f"--seed-file={r}/munge/munged.seed"])
            self._wait(lambda: self.munge_socket.exists(), "munged did not create its socket")
            self._daemon("slurmctld", [_which("slurmctld"), "-D", "-i", "-f", str(self.conf)])
            self._daemon("slurmd", [_which("slurmd"), "-D", "-f", str(self.conf),
                                    "-N", self.host])
            self._wait(self._node_idle, "the node did not become idle")
        except BaseException:
            self.stop()
            raise
        self.started = True
        self.start_seconds = time.monotonic() - t0
        return self

    def _wait(self, ready, what: str, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            self._check_alive(what)
            if ready():
                return
            if time.monotonic() > deadline:
                raise self._why(f"{what} within {self.timeout:.0f} s")
            time.sleep(0.25)

    def _node_idle(self) -> bool:
        try:
            out = self.run("sinfo", "-h", "-N", "-o", "%T", timeout=10, check=False)
        except subprocess.TimeoutExpired:
            return False
        return out.returncode == 0 and out.stdout.strip().startswith("idle")

    def jobs(self) -> list[str]:
        """Ids of the jobs the controller knows that have not ended.

        Examples
        --------
        >>> with LocalSlurm() as slurm:  # doctest: +SKIP
        ...     slurm.jobs()
        []
        """
        out = self.run("squeue", "-h", "-o", "%i", timeout=10, check=False)
        return out.stdout.split() if out.returncode == 0 else []

    def wait_jobs_done(self, timeout: float = STOP_TIMEOUT) -> bool:
        """Wait up to ``timeout`` s until no job is queued or running; whether that happened."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if not self.jobs():
                    return True
            except (subprocess.TimeoutExpired, OSError):
                pass
            time.sleep(0.5)
        return False

    # ------------------------------------------------------------------ stop

    def stop(self) -> None:
        """Cancel every job, stop the daemons, kill what is left, remove a temporary root.

        Safe to call more than once, and after a failed :meth:`start`.
        """
        alive = any(p.poll() is None for p in self._procs.values())
        if alive and self._procs.get("slurmctld") and self._procs["slurmctld"].poll() is None:
            try:
                ids = self.jobs()
                if ids:
                    self.run("scancel", *ids, timeout=10, check=False)
                    self.wait_jobs_done(STOP_TIMEOUT)
            except (subprocess.TimeoutExpired, OSError):
                pass
        daemons = {p.pid for p in self._procs.values()} | {
            pid for name in self._procs if (pid := _read_pid(self.root / "run" / f"{name}.pid"))}
        # what the jobs left (dask workers, their children), not the daemons nor their helpers
        _kill_marked(f"SLURM_CONF={self.conf}", exclude=daemons, spare=_DAEMON_NAMES)
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self._procs.get(name)
            if proc is not None:
                _terminate(proc, self.root / "run" / f"{name}.pid")
        self._procs.clear()
        _kill_marked(f"SLURM_CONF={self.conf}")
        self.started = False
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> LocalSlurm:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _terminate(proc: subprocess.Popen, pid_file: Path) -> None:
    pids = {proc.pid} | ({pid} if (pid := _read_pid(pid_file)) else set())
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    try:
        proc.wait(timeout=STOP_TIMEOUT / 2)
    except subprocess.TimeoutExpired:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        proc.wait(timeout=STOP_TIMEOUT / 2)


def _ancestors() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            with open(f"/proc/{pid}/stat") as fh:
                pid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


#: process names (``/proc/PID/comm``) of the daemons and the helpers they fork
_DAEMON_NAMES = frozenset({"munged", "slurmctld", "slurmd", "slurmscriptd", "slurmstepd"})


def _kill_marked(marker: str, exclude: set[int] = frozenset(),
                 spare: frozenset[str] = frozenset()) -> list[int]:
    """SIGKILL every process whose environment holds ``marker`` (this cluster's leftovers),
    except ``exclude`` (pids), processes named in ``spare`` and this process's ancestors."""
    mine, killed, needle = _ancestors() | set(exclude), [], marker.encode() + b"\0"
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in mine:
            continue
        if spare:
            try:
                with open(f"/proc/{entry}/comm") as fh:
                    if fh.read().strip() in spare:
                        continue
            except OSError:
                continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                env = fh.read() + b"\0"
        except OSError:
            continue
        if b"\0" + needle in b"\0" + env:
            try:
                os.kill(int(entry), signal.SIGKILL)
                killed.append(int(entry))
            except OSError:
                pass
    return killed


def _reap(cmd: list[str]) -> int:
    """Run ``cmd`` as a child subreaper: reap every orphan under it, forward SIGTERM/SIGINT.

    slurmd's job steps (``slurmstepd``) detach from it; without a subreaper they end as zombies
    of PID 1, which does not reap on every machine.  Returns the daemon's exit status.
    """
    import ctypes

    PR_SET_CHILD_SUBREAPER = 36
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    child = subprocess.Popen(cmd)
    stopping = []

    def forward(signum, _frame):
        stopping.append(signum)
        try:
            os.kill(child.pid, signum)
        except OSError:
            pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status, deadline = None, None
    while True:
        try:
            pid, st = os.waitpid(-1, 0 if status is None else os.WNOHANG)
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if pid == child.pid:
            status = os.waitstatus_to_exitcode(st)
            child.returncode = status
            deadline = time.monotonic() + 5.0
        elif pid == 0:  # orphans still running after the daemon ended: give them a moment
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
    return 0 if status is None else status


def check() -> int:
    """Start, run one job with ``srun``, stop; print one line saying how it went.

    Returns 0 when SLURM ran the job, 3 when it cannot start here (the line says why).
    """
    t0 = time.monotonic()
    try:
        with LocalSlurm() as slurm:
            out = slurm.run("srun", "-N1", "-n1", "-t", "1", "hostname", timeout=60, check=False)
            if out.returncode != 0:
                raise SlurmUnavailable(f"srun failed ({out.returncode}): "
                                       f"{(out.stderr or out.stdout).strip()}")
    except (SlurmUnavailable, OSError, subprocess.SubprocessError) as err:
        print(f"[local_slurm] SLURM cannot start here, the slurm tests will be skipped: {err}",
              flush=True)
        return 3
    print(f"[local_slurm] SLURM starts here (slurmctld + slurmd + munged on 127.0.0.1, "
          f"a job ran; {time.monotonic() - t0:.1f} s)", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:2] == ["--reap", "--"]:
        return _reap(argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--check", action="store_true",
                      help="start, run one job, stop, and say whether that worked (exit 0) "
                           "or why not (exit 3)")
    what.add_argument("--shell", action="store_true",
                      help="start and keep running until Ctrl-C; prints SLURM_CONF to export")
    args = parser.parse_args(argv)
    if args.check:
        return check()
    try:
        slurm = LocalSlurm().start()
    except SlurmUnavailable as err:
        print(f"SLURM cannot start: {err}", file=sys.stderr)
        return 1
    try:
        print(f"export SLURM_CONF={slurm.conf}   # then sbatch/squeue/SLURMCluster use it; "
              "Ctrl-C stops it", flush=True)
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        slurm.stop()
    return 0


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM}) \
        if "--shell" in sys.argv else None
    sys.exit(main())
