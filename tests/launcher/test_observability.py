"""Seeing the swarm (issue #17): ``orchflow top`` in a real terminal (tmux), the
Prometheus endpoint scraped under load and checked against the broker's own
counters, and ``orchflow logs``: JSON lines, following, and no payload or environment
value in any process's log.  None of it existed on b788953.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bus.client import Client
from launcher.supervisor import pid_alive
from tests.conftest import launched_swarm

pytestmark = pytest.mark.timeout(180)

SECRET = "s3cr3t-9f2b71"  # in payloads and env values: it must never reach a log


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def swarm():
    port = free_port()
    with launched_swarm("--agents", "2", "--neural-start", "eager", "--metrics", str(port), "--log-format", "json") as (env, home, state):
        yield {"env": env, "home": home, "port": port, "endpoints": state["endpoints"]}


def client(swarm) -> Client:
    ep = swarm["endpoints"]
    return Client(ep["frontend"], events=ep["events"])


def orchflow(swarm, *args, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["orchflow", *args], env=swarm["env"], capture_output=True, timeout=timeout)


# ---------------------------------------------------------------------- top


class Terminal:
    """A real terminal: a tmux server of our own (its own socket), killed by PID at the end."""

    def __init__(self, command: str, env: dict[str, str]) -> None:
        self.sock = f"of-top-{os.getpid()}-{time.monotonic_ns()}"
        self.run("new-session", "-d", "-s", "top", "-x", "160", "-y", "48",
                 "env -u COLUMNS -u LINES " + " ".join(f"{k}={v}" for k, v in env.items() if k.startswith("ORCHFLOW"))
                 + " " + command)  # COLUMNS/LINES from pytest's environment would override the window size
        self.server_pid = int(self.run("display-message", "-p", "#{pid}").strip())
        self.run("set-option", "-t", "top", "remain-on-exit", "on")  # if it dies, its last words stay readable

    def run(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.sock, *args], capture_output=True, text=True, timeout=10,
                              check=True).stdout

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "top")

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", "top", *keys)

    def wait_for(self, predicate, what: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if predicate(screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"the screen never showed {what}:\n{screen}")
            time.sleep(0.2)

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.sock, "kill-server"], capture_output=True, timeout=10)
        if pid_alive(self.server_pid):
            os.kill(self.server_pid, signal.SIGKILL)


def queue_depth(screen: str, kind: str) -> int | None:
    for line in screen.splitlines():
        cells = line.replace("│", " ").split()
        if kind in cells:
            at = cells.index(kind)
            if at + 1 < len(cells) and cells[at + 1].isdigit() and "queued" not in cells:
                return int(cells[at + 1])
    return None


def test_top_shows_agents_a_changing_queue_and_cancels_a_task(swarm):
    assert shutil.which("tmux"), "tmux is needed (apt-get install tmux; .ci/run installs it)"
    term = Terminal("orchflow top --interval 0.2", swarm["env"])
    try:
        term.wait_for(lambda s: "agent0" in s and "agent1" in s and "neural0" in s, "the three agents")
        with client(swarm) as c:
            ids = [c.submit("top.unserved", {"n": i}) for i in range(3)]
            term.wait_for(lambda s: queue_depth(s, "top.unserved") == 3, "a queue of 3")
            ids += [c.submit("top.unserved", {"n": i}) for i in range(3, 5)]
            term.wait_for(lambda s: queue_depth(s, "top.unserved") == 5, "the queue grown to 5")
            term.keys("f")
            term.keys("top.unserved", "Enter")  # only those tasks in the list
            term.wait_for(lambda s: "filter: 'top.unserved'" in s and all(i in s for i in ids), "the filtered list")
            term.keys("Down", "Enter")  # choose a task: its state shows in the detail pane
            screen = term.wait_for(lambda s: any(f"{i}: queued" in s for i in ids), "the chosen task")
            chosen = next(i for i in ids if f"{i}: queued" in screen)
            term.keys("c")
            screen = term.wait_for(lambda s: f"{chosen}: cancelled" in s, "the task cancelled")
            assert c.status([chosen])["tasks"][chosen] == "cancelled"
            assert all(c.status([i])["tasks"][i] == "queued" for i in ids if i != chosen), "only the chosen task"
            term.wait_for(lambda s: queue_depth(s, "top.unserved") == 4, "the queue down to 4")
            assert "unserved" in screen
            c.cancel(*[i for i in ids if i != chosen])
        term.keys("q")
        deadline = time.monotonic() + 10
        while "orchflow top" in term.screen() and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        term.close()


# ---------------------------------------------------------------------- metrics


def scrape(port: int) -> dict[str, list]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    families: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:  # by sample name: counters' samples end in _total, histograms' in _count ...
            families.setdefault(sample.name, []).append(sample)
    return families


def total(families: dict[str, list], name: str, **labels: str) -> float:
    return sum(s.value for s in families.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items()))


def test_metrics_scraped_under_load_match_the_brokers_counters(swarm):
    port = swarm["port"]
    scrapes, stop = [], threading.Event()

    def scraper() -> None:
        while not stop.is_set():
            scrapes.append(scrape(port))
            time.sleep(0.05)

    thread = threading.Thread(target=scraper)
    thread.start()
    try:
        with client(swarm) as c:
            ok = c.submit_many("sys.echo", list(range(300)), project="metrics")
            bad = [c.submit("sys.fail", "nope", project="metrics") for _ in range(7)]
            held = [c.submit("metrics.unserved", i, project="metrics") for i in range(4)]
            c.results(ok + bad, timeout=60)
            c.cancel(held[0])
            time.sleep(0.3)
            status = c.status()
    finally:
        stop.set()
        thread.join(10)
    assert len(scrapes) >= 3, "scrapes answered while tasks ran"
    time.sleep(1.3)  # one snapshot interval: gauges catch up
    m = scrape(port)
    counters = status["counters"]
    finished = "orchflow_tasks_finished_total"
    assert total(m, "orchflow_tasks_submitted_total") == counters["submitted"]
    assert total(m, finished, state="done") == counters["done"]
    assert total(m, finished, state="failed") == counters["failed"]
    assert total(m, finished, state="cancelled") == counters["cancelled"]
    assert total(m, finished, kind="sys.echo", project="metrics", state="done") == 300
    assert total(m, finished, kind="sys.fail", project="metrics", state="failed") == 7
    assert total(m, "orchflow_queue_depth", kind="metrics.unserved") == status["queues"]["metrics.unserved"] == 3
    assert total(m, "orchflow_queue_unserved", kind="metrics.unserved") == 3
    assert total(m, "orchflow_queue_oldest_age_seconds", kind="metrics.unserved") > 0
    assert total(m, "orchflow_agents") == len(status["agents"]) == 3
    assert total(m, "orchflow_task_round_trip_seconds_count", kind="sys.echo") == 300
    assert total(m, "orchflow_task_run_seconds_count", kind="sys.fail") == 7
    assert total(m, "orchflow_journal_commit_seconds_count") > 0
    assert total(m, "orchflow_journal_commit_records_sum") >= 300
    assert total(m, "orchflow_events_dropped_total") == status["events_dropped"]
    assert total(m, "orchflow_memory_map_size_bytes") >= total(m, "orchflow_memory_file_size_bytes") > 0
    rss = {s.labels["process"]: s.value for s in m["orchflow_process_resident_memory_bytes"]}
    assert {"broker", "launcher", "agent0", "agent1", "neural0"} <= set(rss) and min(rss.values()) > 1e6
    with client(swarm) as c:
        c.cancel(*held[1:])


def listening_addresses(port: int) -> set[str]:
    """Local IPv4 addresses with a socket listening on ``port``, from /proc/net/tcp."""
    found = set()
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            host, port_hex = local.split(":")
            if state == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                found.add(socket.inet_ntoa(bytes.fromhex(host)[::-1]))
    return found


def test_metrics_listen_on_loopback_only(swarm):
    assert listening_addresses(swarm["port"]) == {"127.0.0.1"}  # not 0.0.0.0: nobody else can scrape
    assert scrape(swarm["port"])


def test_metrics_address_is_checked_before_anything_starts(tmp_path):
    done = subprocess.run(["orchflow-launch", "--home", str(tmp_path), "--metrics", "127.0.0.1:99999"],
                          capture_output=True, timeout=30)
    assert done.returncode == 2 and b"--metrics" in done.stderr
    assert not (tmp_path / "run" / "state.json").exists()


# ---------------------------------------------------------------------- logs


def test_logs_are_json_lines_follow_and_never_hold_payloads_or_env(swarm):
    with client(swarm) as c:
        failing = c.submit("shell", {"cmd": ["sh", "-c", f"echo {SECRET}; exit 3"], "env": {"TOKEN": SECRET}})
        c.submit("sys.fail", f"boom {SECRET}")
        with pytest.raises(Exception):
            c.result(failing, timeout=30)
    follow = subprocess.Popen(["orchflow", "logs", "-f", "-n", "0"], env=swarm["env"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, start_new_session=True)
    try:
        time.sleep(0.5)
        with client(swarm) as c:  # an agent logs the ids of failed tasks: that must reach the follower
            marker = c.submit("sys.fail", "x")
            with pytest.raises(Exception):
                c.result(marker, timeout=30)
        deadline, seen = time.monotonic() + 15, b""
        os.set_blocking(follow.stdout.fileno(), False)
        while marker.encode() not in seen and time.monotonic() < deadline:
            seen += follow.stdout.read() or b""
            time.sleep(0.1)
        assert marker.encode() in seen, seen[-2000:]
        line = next(ln for ln in seen.decode().splitlines() if marker in ln)
        process, _, text = line.partition(" | ")
        assert process.strip() in ("agent0", "agent1") and json.loads(text)["level"] == "INFO"
    finally:
        os.killpg(follow.pid, signal.SIGKILL)
        follow.wait(10)
    one = orchflow(swarm, "logs", "broker", "-n", "50")
    assert one.returncode == 0
    records = [json.loads(ln) for ln in one.stdout.decode().splitlines() if ln.strip()]
    assert records and all({"ts", "level", "logger", "pid", "msg"} <= set(r) for r in records)
    assert any("broker serving clients at" in r["msg"] for r in records)
    everything = orchflow(swarm, "logs", "-n", "100000")
    processes = {ln.split(" | ", 1)[0].strip() for ln in everything.stdout.decode().splitlines()}
    assert everything.returncode == 0 and {"launcher", "broker", "agent0", "agent1", "neural0"} <= processes
    for name in os.listdir(os.path.join(swarm["home"], "logs")):
        with open(os.path.join(swarm["home"], "logs", name), "rb") as f:
            assert SECRET.encode() not in f.read(), f"{name} holds a payload or env value"
    unknown = orchflow(swarm, "logs", "nonesuch")
    assert unknown.returncode == 2 and b"there are:" in unknown.stderr
