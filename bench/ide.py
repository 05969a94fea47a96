"""The IDE's door, measured: JSON-RPC over stdio and over WebSocket beside the native
Python ``Client``, in one run, against one default swarm.

Every row runs the inline ``sys.echo`` kind on the default swarm (``orchflow-launch``:
2 built-in agents x capacity 4, durable journal on, fsync):

* round trip: one task at a time, submit and wait for its result; p50/p99 over N.
  Native: ``Client.call("sys.echo", i)``.  JSON-RPC: ``tasks.submit`` with
  ``wait: true``, the next request sent when the response arrived.
* pipelined: N tasks in flight at once.  Native: ``Client.submit()`` N times, then
  ``results()``.  JSON-RPC: N ``tasks.submit`` ``wait: true`` requests written back to
  back, then N responses read.

    python bench/ide.py [--n 2000] [--rt 500]

Targets (issue #15): JSON-RPC p50 <= 2x native; pipelined throughput >= 50% of native.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bus import Client  # noqa: E402
from launcher.procs import free_tcp_block  # noqa: E402


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def native(ep: dict, n: int, rt: int) -> tuple[list[float], float]:
    with Client(ep["frontend"], events=ep["events"]) as c:
        for i in range(50):
            c.call("sys.echo", i, timeout=10)
        lat = []
        for i in range(rt):
            t = time.perf_counter()
            c.call("sys.echo", i, timeout=10)
            lat.append(time.perf_counter() - t)
        t = time.perf_counter()
        ids = [c.submit("sys.echo", i) for i in range(n)]
        c.results(ids, timeout=120)
        return lat, n / (time.perf_counter() - t)


def request(i: int) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": i, "method": "tasks.submit",
                       "params": {"kind": "sys.echo", "payload": i, "wait": True}}).encode()


class StdioPeer:
    def __init__(self, env: dict) -> None:
        self.proc = subprocess.Popen(["orchflow", "serve", "--stdio"], env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)

    def send(self, data: bytes) -> None:
        self.proc.stdin.write(data + b"\n")
        self.proc.stdin.flush()

    def recv(self) -> dict:
        while True:
            message = json.loads(self.proc.stdout.readline())
            if "id" in message:
                return message

    def close(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


class WsPeer:
    def __init__(self, env: dict, home: str) -> None:
        from websockets.sync.client import connect
        port = free_tcp_block()
        self.proc = subprocess.Popen(["orchflow", "serve", "--ws", f"127.0.0.1:{port}"], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 20
        while True:
            try:
                token = (Path(home) / "bridge.token").read_text().strip()
                self.ws = connect(f"ws://127.0.0.1:{port}", additional_headers={"Authorization": f"Bearer {token}"},
                                  max_size=None)
                break
            except (OSError, ConnectionError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def send(self, data: bytes) -> None:
        self.ws.send(data.decode())

    def recv(self) -> dict:
        while True:
            message = json.loads(self.ws.recv())
            if "id" in message:
                return message

    def close(self) -> None:
        self.ws.close()
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def over(peer, n: int, rt: int) -> tuple[list[float], float]:
    for i in range(50):
        peer.send(request(i))
        assert "result" in peer.recv()
    lat = []
    for i in range(rt):
        t = time.perf_counter()
        peer.send(request(i))
        reply = peer.recv()
        lat.append(time.perf_counter() - t)
        assert reply["result"]["state"] == "done", reply
    t = time.perf_counter()
    for i in range(n):
        peer.send(request(100_000 + i))
    got = [peer.recv() for _ in range(n)]
    rate = n / (time.perf_counter() - t)
    assert all(r["result"]["state"] == "done" for r in got)
    return lat, rate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000, help="tasks in the pipelined run")
    ap.add_argument("--rt", type=int, default=500, help="sequential round trips")
    args = ap.parse_args()
    home = tempfile.mkdtemp(prefix="orchflow-ide-")
    env = dict(os.environ, ORCHFLOW_HOME=home)
    launcher = subprocess.Popen([sys.executable, "-m", "launcher.orchflow_launch"], env=env, cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        launcher.stdout.readline()
        ep = json.load(open(os.path.join(home, "run", "state.json")))["endpoints"]
        rows = [("native Client: call() / submit()+results()", *native(ep, args.n, args.rt))]
        peer = StdioPeer(env)
        try:
            rows.append(("JSON-RPC over stdio: tasks.submit wait=true", *over(peer, args.n, args.rt)))
        finally:
            peer.close()
        peer = WsPeer(env, home)
        try:
            rows.append(("JSON-RPC over WebSocket: tasks.submit wait=true", *over(peer, args.n, args.rt)))
        finally:
            peer.close()
    finally:
        os.killpg(launcher.pid, signal.SIGTERM)
        launcher.wait(30)
    print(f"IDE bench ({os.cpu_count()} cores): sys.echo (inline handler) on the default swarm, 2 agents x 4, "
          f"journal on (fsync); {args.rt} sequential round trips, {args.n} pipelined tasks\n")
    print(f"{'':50} {'p50 µs':>8} {'p99 µs':>8} {'tasks/s':>9} {'p50 vs native':>14} {'tput vs native':>15}")
    base_p50, base_rate = statistics.median(rows[0][1]), rows[0][2]
    for label, lat, rate in rows:
        p50 = statistics.median(lat)
        print(f"{label:50} {p50 * 1e6:8.0f} {pct(lat, 0.99) * 1e6:8.0f} {rate:9,.0f} {p50 / base_p50:13.2f}x "
              f"{rate / base_rate:14.0%}")
    print("\ntargets: p50 <= 2.00x native, pipelined throughput >= 50% of native")


if __name__ == "__main__":
    main()
