"""A Ray cluster inside one SLURM job: one Ray node per SLURM node, found through a shared folder.

Every task of the job (one per node) calls `ray_cluster(...)`. Node 0 starts the Ray head on free
ports of its SLURM NodeAddr and writes a rendezvous file (atomically) into the job folder; the
other nodes wait for it and join with `ray start --address ... --block`. Node 0 waits until all
nodes are alive, runs the driver, then writes a stop file and ends its head; the other nodes end
their `ray start` when they see the stop file. Ray's auth token is a file in the job folder, so it
travels with the job. Rendezvous and stop files carry the job id and SLURM_RESTART_COUNT, so a
requeued job never reads the files of its previous run.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gantune.errors import GantuneError

log = logging.getLogger(__name__)

TOKEN_FILE = "ray_auth_token"
PORT_NAMES = ("port", "ray-client-server-port", "node-manager-port", "object-manager-port",
               "dashboard-agent-grpc-port", "dashboard-agent-listen-port", "metrics-export-port",
               "runtime-env-agent-port")


def write_token(job_dir: Path) -> Path:
    """A fresh Ray auth token, readable by the owner only (created before anyone can read it)."""
    path = job_dir / TOKEN_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    return path


def auth_env(job_dir: Path) -> dict[str, str]:
    """What every `ray start` and the driver need to talk to this job's cluster."""
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(job_dir / TOKEN_FILE)}


def node_address(nodename: str | None = None) -> str:
    """This SLURM node's NodeAddr (from scontrol), not a loopback or a guess from the hostname.

    A node with several interfaces (ethernet, infiniband, docker bridges) has one address SLURM
    itself uses between nodes; Ray has to bind to that one.
    """
    nodename = nodename or os.environ.get("SLURMD_NODENAME") or socket.gethostname()
    try:
        out = subprocess.run(["scontrol", "show", "node", "-o", nodename], capture_output=True,
                             text=True, timeout=30, check=True).stdout
        for field in out.split():
            if field.startswith("NodeAddr="):
                addr = field.split("=", 1)[1]
                return socket.gethostbyname(addr)  # NodeAddr may be a name
    except (OSError, subprocess.SubprocessError) as e:
        log.warning("scontrol show node %s failed (%s); resolving the hostname", nodename, e)
    addr = socket.gethostbyname(nodename)
    if addr.startswith("127."):
        raise GantuneError(f"node {nodename}: no NodeAddr from scontrol and its name resolves to {addr}")
    return addr


def free_ports(ip: str, n: int) -> list[int]:
    """n distinct ports free on ip right now (users share nodes: never assume 6379 is ours)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((ip, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def ray_start_command(ip: str, temp_dir: Path, cpus: int, gpus: int, head_address: str | None,
                      ports: dict[str, int] | dict[str, str] | None = None) -> list[str]:
    """`ray start` for one node. Head: with explicit free ports. Worker: joins head_address."""
    ray = str(Path(sys.executable).with_name("ray"))
    cmd = [ray, "start", "--block", "--node-ip-address", ip, "--num-cpus", str(cpus),
           "--num-gpus", str(gpus), "--temp-dir", str(temp_dir), "--disable-usage-stats"]
    if head_address is None:
        cmd += ["--head", "--include-dashboard", "false"]
    else:
        cmd += ["--address", head_address]
    # Every node picks its own free ports: Ray's fixed defaults collide between users of a node.
    for name, port in (ports or {}).items():
        cmd += [f"--{name}", str(port)]
    return cmd


def node_ports(ip: str, head: bool) -> dict[str, int]:
    names = PORT_NAMES if head else PORT_NAMES[2:]
    ports = dict(zip(names, free_ports(ip, len(names))))
    # Workers bind a random free port each instead of the shared 10002-19999 range.
    ports["min-worker-port"] = 0
    ports["max-worker-port"] = 0
    return ports


def _ignore_usr2() -> None:
    # SLURM's --signal=USR2@90 goes to every process of the step. Ray's daemons and workers
    # would die of it (default action); only the submitit task should react.
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


@dataclass(frozen=True)
class Rendezvous:
    job_dir: Path
    job_id: str
    restart: int

    @property
    def path(self) -> Path:
        return self.job_dir / f"rendezvous-{self.job_id}-{self.restart}.json"

    @property
    def stop_path(self) -> Path:
        return self.job_dir / f"stop-{self.job_id}-{self.restart}"

    def left_path(self, node_rank: int) -> Path:
        return self.job_dir / f"left-{self.job_id}-{self.restart}-{node_rank}"

    def wait_left(self, nodes: int, timeout_s: float) -> None:
        """Node 0: let the other nodes leave while the head still answers (a quick drain)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(self.left_path(r).exists() for r in range(1, nodes)):
                return
            time.sleep(0.5)
        log.warning("not every node left the Ray cluster in %.0f s; stopping the head anyway", timeout_s)

    def write(self, address: str, nodes: int) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"address": address, "nodes": nodes, "job_id": self.job_id,
                                   "restart": self.restart, "time": time.time()}))
        os.replace(tmp, self.path)

    def wait(self, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.path.exists():
                return str(json.loads(self.path.read_text())["address"])
            time.sleep(0.5)
        raise GantuneError(f"{self.path}: the Ray head did not write its address in {timeout_s:.0f} s")


def _wait_port(ip: str, port: int, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise GantuneError(f"ray start --head exited with {proc.returncode} before listening on {ip}:{port}")
        with socket.socket() as s:
            s.settimeout(1)
            if s.connect_ex((ip, port)) == 0:
                return
        time.sleep(0.5)
    raise GantuneError(f"the Ray head did not listen on {ip}:{port} in {timeout_s:.0f} s")


def wait_for_nodes(n: int, timeout_s: float) -> None:
    """In a driver connected with ray.init: block until n Ray nodes are alive."""
    import ray

    deadline = time.monotonic() + timeout_s
    alive = 0
    while time.monotonic() < deadline:
        alive = sum(1 for node in ray.nodes() if node["Alive"])
        if alive >= n:
            return
        time.sleep(1)
    raise GantuneError(f"only {alive} of {n} Ray nodes joined in {timeout_s:.0f} s")


@contextmanager
def _supervised(cmd: list[str], env: dict[str, str], name: str) -> Iterator[subprocess.Popen[bytes]]:
    log.info("%s: %s", name, " ".join(cmd))
    # Its own process group: the raylet's agents outlive a raylet that lost its GCS, and orphans
    # escape SLURM's process tracking; the group still finds them.
    proc = subprocess.Popen(cmd, env=env, preexec_fn=_ignore_usr2, start_new_session=True)
    try:
        yield proc
    finally:
        # Ends this node's own `ray start --block` (it stops its raylet and workers), nothing else.
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        # The session folder (sockets, Ray's own logs) would pile up in a shared node's /tmp.
        temp_dir = cmd[cmd.index("--temp-dir") + 1]
        shutil.rmtree(temp_dir, ignore_errors=True)


def ray_cluster(job_dir: Path, nodes: int, cpus: int, gpus: int,
                driver: Callable[[str], Any], join_timeout_s: float = 300.0) -> Any:
    """Run on every task of the job. Returns driver(address) on node 0, None elsewhere."""
    node_rank = int(os.environ.get("SLURM_NODEID", "0"))
    job_id = os.environ.get("SLURM_JOB_ID", "local")
    restart = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    rdv = Rendezvous(job_dir, job_id, restart)
    os.environ.update(auth_env(job_dir))  # for the driver's ray.init on node 0
    env = {**os.environ}
    ip = node_address()
    # Node-local Ray session folder: on hosts that share /tmp (and in tests, where the hosts are
    # namespaces of one machine) two nodes must not share socket files.
    temp_dir = Path(os.environ.get("GANTUNE_RAY_TMP", "/tmp")) / f"gtray-{job_id}-{node_rank}"
    if node_rank == 0:
        ports = node_ports(ip, head=True)
        cmd = ray_start_command(ip, temp_dir, cpus, gpus, None, ports)
        with _supervised(cmd, env, "ray head") as proc:
            try:
                _wait_port(ip, ports["port"], proc, timeout_s=120)
                address = f"{ip}:{ports['port']}"
                rdv.write(address, nodes)
                log.info("Ray head at %s; waiting for %d nodes", address, nodes)
                return driver(address)
            except BaseException:
                log.exception("the driver failed")  # before Ray goes down and takes the process
                raise
            finally:
                rdv.stop_path.touch()
                rdv.wait_left(nodes, timeout_s=60)
    address = rdv.wait(join_timeout_s)
    cmd = ray_start_command(ip, temp_dir, cpus, gpus, address, node_ports(ip, head=False))
    with _supervised(cmd, env, f"ray worker {node_rank}") as proc:
        while proc.poll() is None and not rdv.stop_path.exists():
            time.sleep(1)
    rdv.left_path(node_rank).touch()
    return None


def node_hostnames(address: str, nodes: int) -> list[dict[str, str]]:
    """A tiny driver: one Ray task on each node, each returning where it ran. For tests."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=0)
    def where() -> dict[str, str]:
        return {"hostname": socket.gethostname(), "ip": ray.util.get_node_ip_address()}

    ray.init(address=address, configure_logging=False)
    try:
        wait_for_nodes(nodes, timeout_s=300)
        refs = [where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote()
                for n in ray.nodes() if n["Alive"]]
        return sorted(ray.get(refs), key=lambda r: r["hostname"])
    finally:
        ray.shutdown()
