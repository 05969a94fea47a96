"""Check a store for damage, and salvage what is readable, from child processes.

Damage that LMDB notices in a page header it reports as an error; damage it trips
over in a B-tree walk it answers with ``abort()`` (an assertion in ``mdb.c``), which
no Python code can catch.  So every walk here runs in a child process: an aborted
child is itself the finding ("damaged at the page level"), and the caller lives.

* :func:`verify` (in a child): open read-only, walk every named database, check each
  swarm-memory entry's checksum and decode it.
* :func:`salvage`: copy every readable entry into a fresh store.  A child streams
  entries forward from the first key; when it dies on a damaged page, another walks
  backward from the last key until it meets the forward walk, so the entries on both
  sides of the damage survive.

``python -m store.verify PATH`` prints the report (``--json`` for scripts), exit 0
when clean, 1 when damaged; ``orchflow memory verify|salvage`` call these.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import lmdb
import msgpack

from .errors import CorruptValue
from .memory import unseal

CHILD_TIMEOUT = 600.0


@dataclass
class Report:
    path: str
    ok: bool = True
    entries: int = 0
    databases: dict[str, int] = field(default_factory=dict)
    damaged_keys: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def damage(self, text: str) -> None:
        self.ok = False
        if len(self.problems) < 100:
            self.problems.append(text)

    def text(self) -> str:
        if self.ok:
            return f"{self.path}: ok ({self.entries} entries in {len(self.databases)} databases)"
        lines = [f"{self.path}: DAMAGED"] + [f"  {p}" for p in self.problems]
        if self.damaged_keys:
            lines.append(f"  {len(self.damaged_keys)} damaged entries, e.g. {', '.join(self.damaged_keys[:5])}")
        lines.append(f"  salvage readable entries with: orchflow memory salvage {self.path} NEW_PATH")
        return "\n".join(lines)


def _open_readonly(path: str) -> lmdb.Environment:
    """Read-only, but *with* the lock table: a reader the writers cannot see (lock=False)
    has its pages freed and reused under it while the swarm runs, and reports
    MDB_PAGE_NOTFOUND for a healthy store.  Without a usable lock file (read-only
    media, a damaged lock.mdb) it falls back to a lock-free read of a quiet store."""
    try:
        return lmdb.open(path, readonly=True, lock=True, max_dbs=16, subdir=True, create=False)
    except lmdb.Error:
        return lmdb.open(path, readonly=True, lock=False, max_dbs=16, subdir=True, create=False)


def _walk(path: str, retry: bool = True) -> Report:
    """The in-process walk (run it in a child: see the module docstring)."""
    report = Report(path)
    try:
        env = _open_readonly(path)
    except lmdb.Error as exc:
        report.damage(f"not a readable LMDB environment: {exc}")
        return report
    try:
        with env.begin() as txn:
            names = [k for k, _ in txn.cursor()]
            for name in names:
                try:
                    db = env.open_db(name, txn=txn, create=False)
                except lmdb.Error as exc:
                    report.damage(f"database {name!r}: {exc}")
                    continue
                count = 0
                for key, value in txn.cursor(db=db):
                    count += 1
                    if name == b"mem":
                        try:
                            _, body = unseal(key, value)
                            msgpack.unpackb(body, raw=False, strict_map_key=False)
                        except Exception:
                            report.ok = False
                            report.damaged_keys.append(key.replace(b"\0", b"/").decode(errors="replace"))
                report.databases[name.decode(errors="replace")] = count
                report.entries += count
    except lmdb.MapResizedError:
        if not retry:
            raise
        env.close()
        return _walk(path, retry=False)  # a writer grew the file between our open and begin
    except lmdb.Error as exc:
        report.damage(f"{type(exc).__name__}: {exc}")
    finally:
        env.close()
    if report.damaged_keys:
        report.damage(f"{len(report.damaged_keys)} entries fail their checksum or do not decode")
    return report


def verify(path: str, timeout: float = CHILD_TIMEOUT) -> Report:
    """Verify ``path`` in a child process; a child killed by LMDB's abort() means damage."""
    path = os.path.abspath(path)
    if not os.path.exists(os.path.join(path, "data.mdb")):
        return Report(path)  # nothing stored yet: nothing damaged
    try:
        proc = subprocess.run([sys.executable, "-m", "store.verify", "--json", path], capture_output=True,
                              timeout=timeout, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    except subprocess.TimeoutExpired:
        report = Report(path)
        report.damage(f"verification did not finish within {timeout:.0f}s")
        return report
    try:
        return Report(**json.loads(proc.stdout))
    except (ValueError, TypeError):
        report = Report(path)
        why = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit {proc.returncode}"
        report.damage(f"LMDB aborted while walking the B-trees ({why}): damaged at the page level; "
                      f"{proc.stderr.decode(errors='replace').strip()[-300:]}")
        return report


# ---------------------------------------------------------------------- salvage


def _stream(path: str, start: bytes | None, backward: bool) -> None:
    """Child side: write (key, value) pairs of ``mem`` as a msgpack stream to stdout."""
    env = _open_readonly(path)
    out = sys.stdout.buffer
    with env.begin() as txn:
        db = env.open_db(b"mem", txn=txn, create=False)
        cur = txn.cursor(db=db)
        if backward:
            found = cur.last()
            while found:
                if start is not None and cur.key() <= start:
                    break
                out.write(msgpack.packb((cur.key(), cur.value())))
                out.flush()
                found = cur.prev()
        else:
            found = cur.set_range(start) if start is not None else cur.first()
            while found:
                out.write(msgpack.packb((cur.key(), cur.value())))
                out.flush()
                found = cur.next()


def _child_entries(path: str, start: bytes | None, backward: bool) -> tuple[list[tuple[bytes, bytes]], bool]:
    """Entries a child streamed before it finished (True) or died (False)."""
    args = [sys.executable, "-m", "store.verify", "--stream", path, "--from", (start or b"").hex()]
    if backward:
        args.append("--backward")
    proc = subprocess.run(args, capture_output=True, timeout=CHILD_TIMEOUT,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    unpacker = msgpack.Unpacker(raw=True)
    unpacker.feed(proc.stdout)
    entries = []
    try:
        for key, value in unpacker:
            entries.append((key, value))
    except Exception:
        pass  # a pair cut short by the child's death
    return entries, proc.returncode == 0


def salvage(src: str, dst: str) -> dict[str, Any]:
    """Copy every entry of ``src`` that is readable and passes its checksum into a new store ``dst``."""
    from .memory import Memory, SEP

    if os.path.exists(os.path.join(dst, "data.mdb")):
        raise FileExistsError(f"{dst} already holds a store; salvage into a new directory")
    good: dict[bytes, bytes] = {}
    bad = 0
    entries, finished = _child_entries(src, None, False)
    last = entries[-1][0] if entries else None
    while not finished:  # died on damage: resume just past the last key it gave
        if last is None:
            break
        more, finished = _child_entries(src, last + b"\0", False)
        if not more:
            break
        entries += more
        last = more[-1][0]
    if not finished:  # the tail, from the other end, until the forward walk's last key
        tail, _ = _child_entries(src, last, True)
        entries += tail
    for key, value in entries:
        try:
            unseal(key, value)
            good[key] = value
        except CorruptValue:
            bad += 1
    out = Memory(dst)
    by_ns: dict[str, list[tuple[str, Any, float | None]]] = {}
    now = time.time()
    for key, value in good.items():
        ns, name = key.split(SEP, 1)
        expires_ms, body = unseal(key, value)
        if expires_ms and expires_ms <= now * 1000:
            continue
        ttl = expires_ms / 1000 - now if expires_ms else None
        by_ns.setdefault(ns.decode(), []).append((name.decode(), msgpack.unpackb(body, raw=False, strict_map_key=False), ttl))
    copied = 0
    for ns, rows in by_ns.items():
        plain = [(k, v) for k, v, ttl in rows if ttl is None]
        if plain:
            out.put_many(ns, plain)
        for k, v, ttl in rows:
            if ttl is not None:
                out.put(ns, k, v, ttl=ttl)
        copied += len(rows)
    return {"source": os.path.abspath(src), "destination": os.path.abspath(dst), "copied": copied,
            "damaged": bad, "walk_complete": finished}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m store.verify", description="Check an orchflow LMDB store.")
    ap.add_argument("path")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--stream", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--from", dest="start", default="", help=argparse.SUPPRESS)
    ap.add_argument("--backward", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.stream:
        _stream(args.path, bytes.fromhex(args.start) if args.start else None, args.backward)
        return 0
    report = _walk(os.path.abspath(args.path))
    print(json.dumps(asdict(report)) if args.json else report.text())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
