"""A real one-node Slurm cluster for tests, from Debian's slurm-wlm and munge packages.

``LocalSlurm`` starts munged (its own key, socket and pid file), slurmctld and slurmd, all in the
foreground of processes this module started (so their pids are known, never looked up by name),
with a private configuration in a temporary directory: its own ports, state and spool, so it
neither needs nor disturbs a cluster already on the machine. ``stop()`` waits until the queue is
empty (a slurmstepd whose daemons stopped under it stays behind), then ends exactly the daemons it
started, by pid, and any job step process left of its own cluster (found by the cluster's
configuration path in the process's environment), also by pid. The recipe is
shared/docs/SLURM-LOCAL.md's, checked on a 2-core Debian 12 machine as root.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Dict, List, Optional

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "sinfo", "scontrol", "scancel")
SBIN = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")


def _which(name: str) -> Optional[str]:
    found = shutil.which(name)
    if found:
        return found
    for directory in SBIN:
        path = os.path.join(directory, name)
        if os.access(path, os.X_OK):
            return path
    return None


def unavailable_reason() -> Optional[str]:
    """Why no local cluster can be started here (one line), or None when one can."""
    if os.geteuid() != 0:
        return "starting munged, slurmctld and slurmd needs root"
    missing = [name for name in DAEMONS + CLIENTS if _which(name) is None]
    if missing:
        return "Slurm is not installed (apt-get install slurm-wlm munge): no " + ", ".join(missing)
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return "the munge user does not exist (the munge package makes it)"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for this purpose (its parent has not reaped it yet).
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class LocalSlurm:
    """A one-node Slurm cluster in a temporary directory. Use as a context manager."""

    def __init__(self, cpus: Optional[int] = None, keep_dir: bool = False):
        self.cpus = cpus or os.cpu_count() or 1
        self.keep_dir = keep_dir
        self.dir = tempfile.mkdtemp(prefix="gradscope-slurm-")
        self.conf = os.path.join(self.dir, "slurm.conf")
        self.host = socket.gethostname()
        self.processes: Dict[str, subprocess.Popen] = {}
        self.started_pids: List[int] = []

    # ------------------------------------------------------------------ environment
    @property
    def env(self) -> Dict[str, str]:
        """The environment for the cluster's client commands (sbatch, squeue, ...)."""
        env = dict(os.environ)
        env["SLURM_CONF"] = self.conf
        for key in list(env):
            # A job's own variables must not leak into the commands of this cluster.
            if key.startswith(("SLURM_JOB", "SLURM_ARRAY", "SBATCH_", "SQUEUE_")):
                del env[key]
        return env

    def run(self, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), env=self.env, capture_output=True, text=True, check=check, timeout=timeout)

    # ------------------------------------------------------------------ start
    def start(self) -> "LocalSlurm":
        reason = unavailable_reason()
        if reason:
            raise RuntimeError(reason)
        try:
            self._start_munge()
            self._write_conf()
            self._spawn("slurmctld", [_which("slurmctld"), "-D", "-f", self.conf])
            self._wait_for(lambda: self.run("scontrol", "ping", check=False).returncode == 0, "slurmctld to answer", 20)
            self._spawn("slurmd", [_which("slurmd"), "-D", "-f", self.conf, "-N", self.host])
            self._wait_for(self._node_idle, "the node to be idle", 30)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_munge(self) -> None:
        munge = pwd.getpwnam("munge")
        home = os.path.join(self.dir, "munge")
        os.makedirs(home)
        # munged refuses a key or socket directory others may write to; the temporary directory
        # is root's 0700, which the munge user must be able to enter.
        os.chmod(self.dir, 0o755)
        os.chmod(home, 0o755)
        key = os.path.join(home, "munge.key")
        with open(key, "wb") as out:
            out.write(os.urandom(1024))
        os.chmod(key, 0o400)
        for path in (home, key):
            os.chown(path, munge.pw_uid, munge.pw_gid)
        self.munge_socket = os.path.join(home, "munge.socket")
        args = [
            _which("munged"), "--foreground", "--key-file=" + key, "--socket=" + self.munge_socket,
            "--pid-file=" + os.path.join(home, "munged.pid"), "--log-file=" + os.path.join(home, "munged.log"),
            "--seed-file=" + os.path.join(home, "munged.seed"),
        ]
        self._spawn("munged", args, user=munge)
        self._wait_for(lambda: os.path.exists(self.munge_socket), "munged's socket", 10)

    def _write_conf(self) -> None:
        d = self.dir
        for sub in ("state", "spool", "log"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        conf = f"""\
ClusterName=gradscopetest
SlurmctldHost={self.host}
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={self.munge_socket}
CredType=cred/munge
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/log/ctld.log
SlurmdLogFile={d}/log/d.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1,sched_min_interval=100000
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
MinJobAge=2
NodeName={self.host} CPUs={self.cpus} State=UNKNOWN
PartitionName=debug Nodes={self.host} Default=YES MaxTime=INFINITE State=UP
"""
        with open(self.conf, "w") as out:
            out.write(conf)

    def _spawn(self, name: str, args: List[str], user: Optional[pwd.struct_passwd] = None) -> None:
        log = open(os.path.join(self.dir, f"{name}.out"), "wb")
        # munged runs as the munge user, which owns its key; the Slurm daemons as root (SlurmUser=root).
        identity = {} if user is None else {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        process = subprocess.Popen(
            args, env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=self.dir, **identity)
        log.close()
        self.processes[name] = process
        self.started_pids.append(process.pid)
        time.sleep(0.2)
        if process.poll() is not None:
            raise RuntimeError(f"{name} ended at once (exit {process.returncode}): {self._tail(name)}")

    def _tail(self, name: str) -> str:
        texts = []
        for path in (os.path.join(self.dir, f"{name}.out"), os.path.join(self.dir, "log", {"slurmctld": "ctld.log", "slurmd": "d.log"}.get(name, "-"))):
            try:
                with open(path, errors="replace") as log:
                    texts.append(log.read()[-1500:])
            except OSError:
                pass
        return " | ".join(t.strip() for t in texts if t.strip()) or "(no output)"

    def _node_idle(self) -> bool:
        result = self.run("sinfo", "-h", "-o", "%t", check=False)
        return result.returncode == 0 and result.stdout.strip() in ("idle", "idle*") and "*" not in result.stdout

    def _wait_for(self, ready, what: str, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{name} ended (exit {process.returncode}) while waiting for {what}: {self._tail(name)}")
            if ready():
                return
            time.sleep(0.2)
        raise RuntimeError(f"timed out after {seconds:.0f} s waiting for {what}: {self._tail('slurmctld')} {self._tail('slurmd')}")

    # ------------------------------------------------------------------ jobs
    def sbatch(self, *args: str) -> str:
        """Submits a job; returns its id."""
        result = self.run("sbatch", "--parsable", *args)
        return result.stdout.strip().split(";")[0]

    def queue(self) -> List[str]:
        result = self.run("squeue", "-h", "-o", "%i %T", check=False)
        if result.returncode != 0:
            raise RuntimeError(f"squeue failed: {result.stderr.strip()}")
        return [line for line in result.stdout.splitlines() if line.strip()]

    def wait_until_idle(self, seconds: float = 60) -> None:
        """Waits until `squeue -h` lists nothing (every job ended); raises on timeout."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if not self.queue():
                return
            time.sleep(0.3)
        raise TimeoutError(f"jobs still queued after {seconds:.0f} s: {self.queue()}")

    def job_states(self, job: str) -> Dict[str, str]:
        """Each task's final state from scontrol (while the controller still remembers the job)."""
        result = self.run("scontrol", "-o", "show", "job", job, check=False)
        states = {}
        for line in result.stdout.splitlines():
            fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
            states[fields.get("JobId", "?")] = fields.get("JobState", "?") + " " + fields.get("ExitCode", "")
        return states

    # ------------------------------------------------------------------ stop
    def leftover_pids(self) -> List[int]:
        """Processes still alive that belong to this cluster: the daemons started, and any process
        (a slurmstepd, a job's shell) whose environment names this cluster's configuration."""
        found = [pid for pid in self.started_pids if _alive(pid)]
        marker = ("SLURM_CONF=" + self.conf).encode()
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid() or int(entry) in found:
                continue
            try:
                with open(f"/proc/{entry}/environ", "rb") as environ:
                    if marker in environ.read().split(b"\0") and _alive(int(entry)):
                        found.append(int(entry))
            except OSError:
                continue
        return found

    def stop(self) -> None:
        """Stops what this cluster started, by pid: first the jobs (waiting for the queue to empty,
        cancelling what is left), then slurmd, slurmctld and munged, then any left step process."""
        try:
            if "slurmctld" in self.processes and self.processes["slurmctld"].poll() is None:
                try:
                    self.wait_until_idle(30)
                except (TimeoutError, RuntimeError, subprocess.SubprocessError):
                    self.run("scancel", "--full", "--user=root", check=False)
                    try:
                        self.wait_until_idle(15)
                    except (TimeoutError, RuntimeError, subprocess.SubprocessError):
                        pass
        finally:
            for name in ("slurmd", "slurmctld", "munged"):
                process = self.processes.get(name)
                if process is None or process.poll() is not None:
                    continue
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(5)
            # A step process whose daemons ended under it ignores SIGTERM: SIGKILL, by its pid.
            for pid in self.leftover_pids():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 5
            while self.leftover_pids() and time.monotonic() < deadline:
                time.sleep(0.1)
            if not self.keep_dir:
                shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "LocalSlurm":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
