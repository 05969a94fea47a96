"""Store benchmark: Memory against raw py-lmdb, and bus throughput with the journal on/off.

Raw py-lmdb is measured in the same run, doing the same unit of work per operation
(one transaction per put or get, same sync setting), on raw bytes and on the same
msgpack-encoded objects.

    python bench/store.py [--ops 20000] [--tasks 20000]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
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

    raw = lmdb.open(os.path.join(tmp, f"raw{sync}{writemap}"), map_size=1 << 30, max_dbs=4, sync=sync,
                    metasync=sync, writemap=writemap)
    db = raw.open_db(b"mem")

    # Raw loops use py-lmdb's cheapest form (explicit begin/commit, no context manager),
    # as Memory itself does, so the ratio measures Memory's own work.
    def raw_put(n: int) -> None:
        for i in range(n):
            txn = raw.begin(write=True, db=db)
            txn.put(keys[i].encode(), raw_value)
            txn.commit()

    def raw_get(n: int) -> None:
        for i in range(n):
            raw.begin(db=db).get(keys[i].encode())

    # The same job Memory does: store Python objects, so encode/decode them.
    def raw_put_obj(n: int) -> None:
        for i in range(n):
            txn = raw.begin(write=True, db=db)
            txn.put(keys[i].encode(), msgpack.packb(value))
            txn.commit()

    def raw_get_obj(n: int) -> None:
        for i in range(n):
            msgpack.unpackb(raw.begin(db=db).get(keys[i].encode()))

    feed = raw.open_db(b"feed")
    feed_key, feed_head = struct.Struct(">Q"), struct.Struct(">Bd")

    # What Memory.put writes: the value and a change-feed record, in one transaction.
    def raw_put_feed(n: int) -> None:
        for i in range(n):
            txn = raw.begin(write=True, db=db)
            key = keys[i].encode()
            txn.put(key, msgpack.packb(value))
            txn.put(feed_key.pack(txn.id() << 16), feed_head.pack(1, time.time()) + key, db=feed, append=True)
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
    raw.close()
    E.close_env(mem.path)
    return out


def load_bus_bench():
    spec = importlib.util.spec_from_file_location("bus_bench", os.path.join(ROOT, "bench", "bus.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ops", type=int, default=20000)
    ap.add_argument("--tasks", type=int, default=20000)
    ap.add_argument("--agents", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="orchflow-store-bench-") as tmp:
        print(f"store benchmark: {args.ops} ops each, one transaction per op\n")
        print("raw bytes = py-lmdb storing pre-encoded bytes; raw+msgpack = py-lmdb storing the same")
        print("Python objects Memory stores (encode on put, decode on get); ratio = Memory / raw.")
        print("get reads the keys just put: Memory remembers keys it has validated (64k per namespace);")
        print("the next row reads them through a fresh Memory object, which has to validate each.")
        print("Memory opens LMDB with writemap=True; raw is measured with py-lmdb's defaults and with")
        print("writemap=True (the same flags as Memory).\n")
        for writemap in (False, True):
            fast = bench_memory(tmp, args.ops, sync=False, writemap=writemap)
            durable = bench_memory(tmp, max(500, args.ops // 10), sync=True, writemap=writemap)
            print(f"raw py-lmdb with {'writemap=True (same flags as Memory)' if writemap else 'default flags'}:")
            print(f"  {'operation':28} {'raw bytes/s':>12} {'raw+msgpack/s':>14} {'Memory/s':>10} "
                  f"{'vs bytes':>9} {'vs +msgpack':>12}")
            rows = [("get", fast, "get"), ("get, keys new to Memory", fast, "get_cold"),
                    ("put (no fsync)", fast, "put"),
                    ("durable put (fsync/commit)", durable, "put")]
            for name, r, op in rows:
                base = op.split("_")[0]
                raw_b, raw_o, ours = r[f"raw_{base}"], r[f"raw_{base}_obj"], r[f"mem_{op}"]
                print(f"  {name:28} {raw_b:12.0f} {raw_o:14.0f} {ours:10.0f} {ours / raw_b * 100:8.0f}% "
                      f"{ours / raw_o * 100:11.0f}%")
            same = fast["raw_put_feed"]
            print(f"  put against raw doing the same two writes (value + change-feed record): raw {same:.0f}/s, "
                  f"Memory {fast['mem_put'] / same * 100:.0f}%")
            print()

        bus_bench = load_bus_bench()
        print(f"\nbus throughput, {args.tasks} no-op tasks, {args.agents} agents:")
        print(f"{'journal':28} {'submit()/s':>12} {'submit_many/s':>14}")
        results = {}
        for label, journal in (("off (in memory)", False), ("LMDB, fsync per group", True)):
            r = bus_bench.orchflow_throughput(tmp, args.agents, args.tasks, journal)
            results[journal] = r
            print(f"{label:28} {r['single']:12.0f} {r['batched']:14.0f}")
        print(f"{'durable / non-durable':28} {results[True]['single'] / results[False]['single'] * 100:11.0f}% "
              f"{results[True]['batched'] / results[False]['batched'] * 100:13.0f}%")


if __name__ == "__main__":
    main()
