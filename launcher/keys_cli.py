"""``orchflow keys``: the broker's certificate and the identities allowed over TCP.

Every change is a file under ``$ORCHFLOW_HOME/keys`` (0700, files 0600) that a
running broker reads again within a second: no restart to revoke a key.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bus.auth import AGENT, ANY, CLIENT, KeyRing
from bus.errors import AuthError

HELP = """\
init                          make the broker's certificate (once; --force makes a new one)
add client NAME --project P   a key for a client acting for P (repeat --project; '*' for any)
add agent NAME --kind K       a key for an agent serving K (repeat --kind; optional --project)
list                          identities, their rights and state
revoke NAME / allow NAME      refuse / accept NAME's key again (takes effect within a second)
local [--project P] [--kind K] [--no-shared-write] [--unrestricted]
                              restrict what this machine's user (ipc) may do
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    k = sub.add_parser("keys", help="CURVE keys and identities for TCP peers",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    k.add_argument("--home", default=argparse.SUPPRESS, help="swarm home (default $ORCHFLOW_HOME or ~/.orchflow)")
    k.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")
    k.add_argument("op", choices=["init", "add", "list", "revoke", "allow", "local"])
    k.add_argument("args", nargs="*", help="add: ROLE NAME; revoke/allow: NAME")
    k.add_argument("--project", dest="projects", action="append", default=None,
                   help="project the identity may act for (repeatable; '*' for any)")
    k.add_argument("--kind", dest="kinds", action="append", default=None, help="agent: kind it may serve")
    k.add_argument("--shared-write", action="store_true", help="client: may write the 'shared' memory")
    k.add_argument("--no-shared-write", action="store_true", help="local: may not write 'shared'")
    k.add_argument("--unrestricted", action="store_true", help="local: lift every restriction")
    k.add_argument("--public-key", default=None, help="add: register a peer's own Z85 public key instead")
    k.add_argument("--force", action="store_true", help="init: replace the broker certificate")


def run(home: Path, args: argparse.Namespace) -> int:
    ring = KeyRing(home)
    projects = args.projects
    try:
        if args.op == "init":
            public = ring.create_broker(force=args.force)
            print(f"broker certificate: {public} (give this public file to every remote peer)")
        elif args.op == "add":
            if len(args.args) != 2 or args.args[0] not in (CLIENT, AGENT):
                raise AuthError("usage: orchflow keys add client|agent NAME [--project P] [--kind K]")
            role, name = args.args
            ring.create_broker()
            secret = ring.add(role, name, projects=projects, kinds=args.kinds,
                              shared_write=args.shared_write, public_key=args.public_key)
            broker_public, _ = ring.broker_files()
            if args.json:
                print(json.dumps({"name": name, "role": role, "secret": str(secret) if secret else None,
                                  "broker_key": str(broker_public)}))
            else:
                print(f"allowed {role} {name!r}")
                if secret:
                    print(f"  its secret key:     {secret}   (copy to that host only, mode 0600)")
                print(f"  the broker's key:   {broker_public}")
                print(f"  on that host:       ORCHFLOW_KEY=<its copy of {Path(str(secret or 'NAME.key_secret')).name}>"
                      f" ORCHFLOW_BROKER_KEY=<its copy of broker.key>")
        elif args.op == "list":
            ids = ring.identities()
            if args.json:
                print(json.dumps({"identities": ids, "local": _local(ring)}, indent=2, default=str))
            else:
                for name, e in sorted(ids.items()):
                    state = "REVOKED" if e.get("revoked") else "allowed"
                    print(f"{name:20} {e.get('role', '?'):6} {state:8} projects={_names(e.get('projects'))} "
                          f"kinds={_names(e.get('kinds'))} shared_write={bool(e.get('shared_write'))} "
                          f"key={e.get('public', '')[:8]}…")
                local = _local(ring)
                print(f"{'local (ipc)':20} local  allowed  projects={_names(local['projects'])} "
                      f"kinds={_names(local['kinds'])} shared_write={local['shared_write']}")
        elif args.op in ("revoke", "allow"):
            if len(args.args) != 1:
                raise AuthError(f"usage: orchflow keys {args.op} NAME")
            ring.set_revoked(args.args[0], args.op == "revoke")
            print(f"{args.args[0]}: {'revoked' if args.op == 'revoke' else 'allowed'}")
        elif args.op == "local":
            if args.unrestricted:
                ring.restrict_local(None, None, True)
            else:
                ring.restrict_local(projects, args.kinds, not args.no_shared_write)
            print(f"local user: {_local(ring)}")
    except AuthError as exc:
        print(f"orchflow keys: {exc}", file=sys.stderr)
        return 2
    return 0


def _names(values: list[str] | None) -> str:
    return ANY if values is None or ANY in values else ",".join(values)


def _local(ring: KeyRing) -> dict:
    p = ring.local
    return {"projects": sorted(p.projects) if p.projects is not None else None,
            "kinds": sorted(p.kinds) if p.kinds is not None else None, "shared_write": p.shared_write}
