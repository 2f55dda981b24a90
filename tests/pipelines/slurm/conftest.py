"""A real single-node SLURM cluster on this host for the tests: munged, slurmctld and slurmd, run as root.

Everything lives in one temporary directory (config, munge key and socket, state, spool, logs) and uses free
TCP ports, so it neither needs nor touches /etc/slurm or a system munged. Accounting is off (no slurmdbd,
which would need a MySQL server): ``sacct`` fails, and ``mwsis slurm status`` falls back to ``squeue`` and
the exit codes the tasks record, which is what this cluster tests.

When the cluster cannot start, the tests skip with the reason, unless ``MWSIS_REQUIRE_SLURM=1`` (CI), where
they fail with the daemons' logs.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "sinfo", "scancel")


@dataclass
class Cluster:
    """A running test cluster; ``env`` points SLURM commands at it."""

    root: Path
    conf: Path
    env: dict
    procs: list = field(default_factory=list)

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), env={**os.environ, **self.env}, capture_output=True, text=True,
                              timeout=60, check=check)

    def logs(self) -> str:
        out = []
        for p in sorted((self.root / "log").glob("*")):
            out.append(f"==== {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-40:]))
        return "\n".join(out)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_line() -> str:
    """This host as slurmd sees it (CPUs, sockets, RealMemory), reachable on the loopback address."""
    line = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, timeout=30, check=True).stdout
    return line.splitlines()[0].strip() + " NodeAddr=127.0.0.1 State=UNKNOWN"


def write_conf(root: Path, host: str, node_line: str, ctld_port: int, slurmd_port: int) -> Path:
    """slurm.conf for a one-node cluster under ``root`` (pure text; no cgroups, no accounting)."""
    conf = root / "slurm.conf"
    conf.write_text(f"""\
ClusterName=mwsistest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/run/munge.sock
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
# containers and CI runners rarely delegate cgroups: track processes by /proc, bind nothing
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
# keep ended jobs visible to squeue for the whole session (status reads their final state there)
MinJobAge=3600
KillWait=5
{node_line}
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
    return conf


def _unavailable() -> str | None:
    missing = [c for c in DAEMONS + CLIENTS + ("munge",) if not shutil.which(c)]
    if missing:
        return (f"SLURM test cluster: {', '.join(missing)} not installed "
                "(apt-get install slurm-wlm munge)")
    if os.geteuid() != 0:
        return "SLURM test cluster: slurmd must run as root"
    return None


def _wait(pred, timeout: float, what: str, cluster: Cluster | None = None) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        for p in cluster.procs if cluster else ():
            if p.poll() is not None:
                raise RuntimeError(f"{what}: {p.args[0]} exited with code {p.returncode}")
        time.sleep(0.2)
    raise RuntimeError(f"{what}: not after {timeout:.0f} s")


def _start(cluster: Cluster, args: list[str], name: str) -> None:
    out = open(cluster.root / "log" / f"{name}.stdout", "w")
    cluster.procs.append(subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **cluster.env},
                                          start_new_session=True))


def start_cluster() -> Cluster:
    """Start munged, slurmctld and slurmd; return once the node is idle. On failure everything started is
    stopped again and the error carries the daemons' logs."""
    # under /tmp with a short name: munge's socket path must fit in 108 bytes, and every directory above
    # the socket must be searchable by all (munged checks)
    root = Path(tempfile.mkdtemp(prefix="mwsis-slurm-", dir="/tmp"))
    cluster = Cluster(root, root / "slurm.conf", {"SLURM_CONF": str(root / "slurm.conf")})
    try:
        root.chmod(0o755)
        for d in ("run", "state", "spool", "log", "munge"):
            (root / d).mkdir()
        (root / "munge").chmod(0o700)
        key = root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        write_conf(root, socket.gethostname().split(".")[0], _node_line(), _free_port(), _free_port())
        sock = root / "run" / "munge.sock"
        _start(cluster, ["munged", "--foreground", f"--key-file={key}", f"--socket={sock}",
                         f"--pid-file={root}/run/munged.pid", f"--log-file={root}/log/munged.log",
                         f"--seed-file={root}/munge/seed"], "munged")
        _wait(sock.exists, 15, "munged socket", cluster)
        _start(cluster, ["slurmctld", "-D", "-f", str(cluster.conf)], "slurmctld")
        _start(cluster, ["slurmd", "-D", "-f", str(cluster.conf)], "slurmd")

        def idle() -> bool:
            r = cluster.run("sinfo", "--noheader", "--format=%t", check=False)
            return r.returncode == 0 and r.stdout.strip() == "idle"

        _wait(idle, 60, "node idle in sinfo", cluster)
    except Exception as e:
        logs = cluster.logs()
        stop_cluster(cluster)
        raise RuntimeError(f"{e}\n{logs}") from e
    return cluster


def stop_cluster(cluster: Cluster) -> None:
    """Cancel what is left, then stop the daemons we started (by their pids), then remove the directory."""
    if cluster.procs and all(p.poll() is None for p in cluster.procs):
        cluster.run("scancel", "--full", "--user", str(os.geteuid()), check=False)
        end = time.monotonic() + 20
        while time.monotonic() < end and cluster.run("squeue", "--noheader", check=False).stdout.strip():
            time.sleep(0.3)
    for p in reversed(cluster.procs):  # slurmd, slurmctld, munged
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
    shutil.rmtree(cluster.root, ignore_errors=True)


@pytest.fixture(scope="session")
def slurm_cluster():
    """The running cluster (session-wide); skips, or fails under MWSIS_REQUIRE_SLURM=1, if it cannot start."""
    required = os.environ.get("MWSIS_REQUIRE_SLURM") == "1"
    reason = _unavailable()
    if reason:
        if required:
            pytest.fail(f"{reason}; MWSIS_REQUIRE_SLURM=1 requires it", pytrace=False)
        pytest.skip(reason)
    t0 = time.monotonic()
    try:
        cluster = start_cluster()
    except Exception as e:  # noqa: BLE001 - any failure to start is reported with the daemons' logs
        if required:
            pytest.fail(f"SLURM test cluster did not start: {e}", pytrace=False)
        pytest.skip(f"SLURM test cluster did not start: {str(e).splitlines()[0]}")
    print(f"SLURM test cluster up in {time.monotonic() - t0:.1f} s ({cluster.root})")
    try:
        yield cluster
    finally:
        stop_cluster(cluster)


if __name__ == "__main__":
    # `python tests/pipelines/slurm/conftest.py`: the same cluster for trying `mwsis slurm ...` by hand; Ctrl-C stops it
    t0 = time.monotonic()
    c = start_cluster()
    print(f"cluster up in {time.monotonic() - t0:.1f} s; in another shell:\n  export SLURM_CONF={c.conf}", flush=True)
    try:
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        stop_cluster(c)
        print("cluster stopped")
