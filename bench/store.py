"""Store benchmark: Memory against raw py-lmdb, and bus throughput with the journal on/off.

Raw py-lmdb is measured in the same run, doing the same unit of work per operation
(one transaction per put or get, same sync setting), on raw bytes and on the same
msgpack-encoded objects.

    python bench/store.py [--ops 20000] [--tasks 20000] [--repeat 5]

Each figure is the median of --repeat rounds; a ratio is the median of the per-round
ratios, each taken between raw and Memory measured back to back, so a noisy moment
on the machine moves both sides of a ratio or neither.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import struct
import sys
import tempfile
import time

import lmdb
import msgpack

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from store import Memory  # noqa: E402
from store import env as E  # noqa: E402


def rate(fn, n: int) -> float:
    t = time.perf_counter()
    fn(n)
    return n / (time.perf_counter() - t)


def bench_memory(tmp: str, ops: int, sync: bool, writemap: bool) -> dict[str, float]:
    value = {"cmd": "make -j8", "cwd": "/src/project", "n": 42}
    raw_value = msgpack.packb(value)
    keys = [f"key{i:08d}" for i in range(ops)]
    # Raw stores the very bytes Memory stores (namespace, NUL, key), pre-encoded.
    full_keys = [b"project:bench\x00" + k.encode() for k in keys]

    def open_raw(name: str) -> tuple[lmdb.Environment, object, object]:
        """Each put loop inserts into its own fresh environment, as Memory's does: the
        same keys written again into one would be cheaper overwrites, not inserts."""
        env = lmdb.open(os.path.join(tmp, f"{name}{sync}{writemap}"), map_size=1 << 30, max_dbs=4, sync=sync,
                        metasync=sync, writemap=writemap)
        return env, env.open_db(b"mem"), env.open_db(b"feed")

    raw_b, db_b, _ = open_raw("raw-bytes")
    raw_o, db_o, _ = open_raw("raw-obj")
    raw_f, db_f, feed = open_raw("raw-feed")

    # Raw loops use py-lmdb's cheapest form (explicit begin/commit, no context manager,
    # positional arguments), as Memory itself does, so the ratio measures Memory's own work.
    def raw_put(n: int) -> None:
        for i in range(n):
            txn = raw_b.begin(db_b, None, True)
            txn.put(full_keys[i], raw_value)
            txn.commit()

    def raw_get(n: int) -> None:
        for i in range(n):
            raw_b.begin(db_b).get(full_keys[i])

    # The same job Memory does: store Python objects, so encode/decode them.
    def raw_put_obj(n: int) -> None:
        for i in range(n):
            txn = raw_o.begin(db_o, None, True)
            txn.put(full_keys[i], msgpack.packb(value))
            txn.commit()

    def raw_get_obj(n: int) -> None:
        for i in range(n):
            msgpack.unpackb(raw_o.begin(db_o).get(full_keys[i]))

    feed_key, feed_head = struct.Struct(">Q"), struct.Struct(">Bd")

    # What Memory.put writes: the value and a change-feed record, in one transaction.
    def raw_put_feed(n: int) -> None:
        for i in range(n):
            txn = raw_f.begin(db_f, None, True)
            key = full_keys[i]
            txn.put(key, msgpack.packb(value))
            txn.put(feed_key.pack(txn.id() << 16), feed_head.pack(1, time.time()) + key, True, True, True, feed)
            txn.commit()

    mem = Memory(os.path.join(tmp, f"mem{sync}{writemap}"), map_size=1 << 30, sync=sync)

    def mem_put(n: int) -> None:
        for i in range(n):
            mem.put("project:bench", keys[i], value)

    def mem_get(n: int) -> None:
        for i in range(n):
            mem.get("project:bench", keys[i])

    cold = Memory(mem.path, map_size=1 << 30, sync=sync)  # same environment, nothing remembered

    def mem_get_cold(n: int) -> None:
        for i in range(n):
            cold.get("project:bench", keys[i])

    out = {"raw_put": rate(raw_put, ops), "raw_put_obj": rate(raw_put_obj, ops), "mem_put": rate(mem_put, ops),
           "raw_put_feed": rate(raw_put_feed, ops),
           "raw_get": rate(raw_get, ops), "raw_get_obj": rate(raw_get_obj, ops), "mem_get": rate(mem_get, ops),
           "mem_get_cold": rate(mem_get_cold, ops)}
    for env in (raw_b, raw_o, raw_f):
        env.close()
    E.close_env(mem.path)
    return out


def put_breakdown(tmp: str, ops: int, repeat: int) -> None:
    """Where a non-durable Memory.put's time goes, step by step from raw py-lmdb (same
    flags as Memory): each step adds one piece of Memory's work, inserting new keys into
    a fresh environment, medians of ``repeat`` rounds."""
    value = {"cmd": "make -j8", "cwd": "/src/project", "n": 42}
    keys = [f"key{i:08d}" for i in range(ops)]
    feed_key, feed_head = struct.Struct(">Q"), struct.Struct(">Bd")

    def step(name: str, with_key: bool, with_feed: bool, rnd: int) -> float:
        mem = Memory(os.path.join(tmp, f"bd-{name}-{rnd}"), map_size=1 << 30, sync=False)
        env, db, feed = mem.env, mem._mem, mem._feed
        full_keys = [b"project:bench\x00" + k.encode() for k in keys]
        t = time.perf_counter()
        for i in range(ops):
            full = mem._key("project:bench", keys[i]) if with_key else full_keys[i]
            txn = env.begin(db, None, True)
            txn.put(full, msgpack.packb(value))
            if with_feed:
                txn.put(feed_key.pack(txn.id() << 16), feed_head.pack(1, time.time()) + full, True, True, True, feed)
            txn.commit()
        elapsed = time.perf_counter() - t
        E.close_env(mem.path)
        return elapsed / ops * 1e6

    def memory_put(rnd: int) -> float:
        mem = Memory(os.path.join(tmp, f"bd-mem-{rnd}"), map_size=1 << 30, sync=False)
        t = time.perf_counter()
        for k in keys:
            mem.put("project:bench", k, value)
        elapsed = time.perf_counter() - t
        E.close_env(mem.path)
        return elapsed / ops * 1e6

    rows: dict[str, list[float]] = {}
    for rnd in range(repeat):
        for label, fn in (("raw py-lmdb: value only, key pre-encoded", lambda r: step("raw", False, False, r)),
                          ("+ Memory's key handling (validate, namespace, remember)",
                           lambda r: step("key", True, False, r)),
                          ("+ the change-feed record, same transaction", lambda r: step("feed", True, True, r)),
                          ("Memory.put", memory_put)):
            rows.setdefault(label, []).append(fn(rnd))
    base = statistics.median(rows["raw py-lmdb: value only, key pre-encoded"])
    print(f"\nwhere a non-durable put's time goes (new keys, µs per put, medians of {repeat}):")
    for label, values in rows.items():
        us = statistics.median(values)
        print(f"  {label:58} {us:6.2f} µs   raw is {base / us * 100:4.0f}% of this")


def load_bus_bench():
    spec = importlib.util.spec_from_file_location("bus_bench", os.path.join(ROOT, "bench", "bus.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def median_rounds(rounds: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}


def ratio(rounds: list[dict[str, float]], ours: str, raw: str) -> float:
    """Median over rounds of ours/raw, in percent."""
    return statistics.median(r[ours] / r[raw] for r in rounds) * 100


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ops", type=int, default=20000)
    ap.add_argument("--tasks", type=int, default=20000)
    ap.add_argument("--agents", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="orchflow-store-bench-") as tmp:
        print(f"store benchmark: {args.ops} ops each, one transaction per op, medians of {args.repeat} rounds\n")
        print("raw bytes = py-lmdb storing pre-encoded bytes; raw+msgpack = py-lmdb storing the same")
        print("Python objects Memory stores (encode on put, decode on get); ratio = Memory / raw.")
        print("get reads the keys just put: Memory remembers keys it has validated (64k per namespace);")
        print("the next row reads them through a fresh Memory object, which has to validate each.")
        print("Memory opens LMDB with writemap=True; raw is measured with py-lmdb's defaults and with")
        print("writemap=True (the same flags as Memory).\n")
        for writemap in (False, True):
            fast_rounds, durable_rounds = [], []
            for i in range(args.repeat):
                round_dir = os.path.join(tmp, f"r{writemap}{i}")
                os.makedirs(round_dir)
                fast_rounds.append(bench_memory(round_dir, args.ops, sync=False, writemap=writemap))
                durable_rounds.append(bench_memory(round_dir, max(500, args.ops // 10), sync=True,
                                                   writemap=writemap))
            fast, durable = median_rounds(fast_rounds), median_rounds(durable_rounds)
            print(f"raw py-lmdb with {'writemap=True (same flags as Memory)' if writemap else 'default flags'}:")
            print(f"  {'operation':28} {'raw bytes/s':>12} {'raw+msgpack/s':>14} {'Memory/s':>10} "
                  f"{'vs bytes':>9} {'vs +msgpack':>12}")
            rows = [("get", fast_rounds, "get"), ("get, keys new to Memory", fast_rounds, "get_cold"),
                    ("put (no fsync)", fast_rounds, "put"),
                    ("durable put (fsync/commit)", durable_rounds, "put")]
            for name, rounds, op in rows:
                base = op.split("_")[0]
                r = fast if rounds is fast_rounds else durable
                print(f"  {name:28} {r[f'raw_{base}']:12.0f} {r[f'raw_{base}_obj']:14.0f} {r[f'mem_{op}']:10.0f} "
                      f"{ratio(rounds, f'mem_{op}', f'raw_{base}'):8.0f}% "
                      f"{ratio(rounds, f'mem_{op}', f'raw_{base}_obj'):11.0f}%")
            print(f"  put against raw doing the same two writes (value + change-feed record): "
                  f"raw {fast['raw_put_feed']:.0f}/s, Memory {ratio(fast_rounds, 'mem_put', 'raw_put_feed'):.0f}%")
            print()
        put_breakdown(tmp, args.ops, args.repeat)

        bus_bench = load_bus_bench()
        print(f"\nbus throughput, {args.tasks} no-op tasks, {args.agents} agents, "
              f"medians of {args.repeat} rounds (journal off, then on, in each):")
        print(f"{'journal':28} {'submit()/s':>12} {'submit_many/s':>14}")
        rounds = []
        for i in range(args.repeat):
            off = bus_bench.orchflow_throughput(tmp, args.agents, args.tasks, False, tag=str(i))
            on = bus_bench.orchflow_throughput(tmp, args.agents, args.tasks, True, tag=str(i))
            rounds.append({"off_single": off["single"], "off_batched": off["batched"],
                           "on_single": on["single"], "on_batched": on["batched"]})
        m = median_rounds(rounds)
        print(f"{'off (in memory)':28} {m['off_single']:12.0f} {m['off_batched']:14.0f}")
        print(f"{'LMDB, fsync per group':28} {m['on_single']:12.0f} {m['on_batched']:14.0f}")
        print(f"{'durable / non-durable':28} {ratio(rounds, 'on_single', 'off_single'):11.0f}% "
              f"{ratio(rounds, 'on_batched', 'off_batched'):13.0f}%")
        print("per round, submit():", " ".join(f"{r['on_single'] / r['off_single'] * 100:.0f}%" for r in rounds))


if __name__ == "__main__":
    main()
