"""Who a peer is: CURVE keys, the identities they stand for, and what each may do.

The broker never believes what a message says about its sender.  Over TCP the
only accepted mechanism is CURVE, authenticated by pyzmq's ZAP handler
(``zmq.auth``) against ``$ORCHFLOW_HOME/keys/identities.json``; libzmq then stamps
every message of that connection with the identity's name as its ``User-Id``, and
the broker looks the name up again per message, so a revocation holds even for a
connection made before it.  Over ipc the socket directory is the owner's alone
(0700), so the local user is one identity, ``local``, unrestricted unless the
operator restricts it (docs/SECURITY.md).

Files under ``keys/`` (directory 0700, every file 0600):

* ``broker.key`` / ``broker.key_secret`` - the broker's certificate (zmq.auth format);
  hand ``broker.key`` (public) to every remote peer.
* ``issued/<name>.key_secret`` - a client's or agent's certificate made here; give it,
  with ``broker.key``, to that peer alone.
* ``identities.json`` - the allow list: name, role, public key, projects, kinds, revoked.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import zmq
import zmq.auth
from zmq.utils import z85

from .errors import AuthError

log = logging.getLogger("orchflow.auth")

#: The ZAP domain of every orchflow TCP socket.
ZAP_DOMAIN = "orchflow"
LOCAL = "local"
CLIENT, AGENT = "client", "agent"
ROLES = (CLIENT, AGENT)
ANY = "*"
IDENTITIES = "identities.json"
BROKER_CERT = "broker"
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def keys_dir(home: str | os.PathLike[str]) -> Path:
    return Path(home) / "keys"


def check_name(name: str) -> str:
    if not name or len(name) > 64 or not set(name) <= _NAME_CHARS or name in (LOCAL, BROKER_CERT):
        raise AuthError(f"identity name {name!r}: 1-64 of [A-Za-z0-9._-], not {LOCAL!r} or {BROKER_CERT!r}")
    return name


@dataclass(frozen=True)
class Principal:
    """An identity as the broker enforces it.  ``None`` projects or kinds means any."""

    name: str
    role: str                                  # "client", "agent" or "local"
    projects: frozenset[str] | None = None
    kinds: frozenset[str] | None = None
    shared_write: bool = True
    remote: bool = False

    def may_act_for(self, project: str) -> bool:
        return self.projects is None or project in self.projects

    def may_serve(self, kind: str) -> bool:
        return self.kinds is None or kind in self.kinds

    @property
    def is_agent(self) -> bool:
        return self.role in (AGENT, LOCAL)

    @property
    def is_client(self) -> bool:
        return self.role in (CLIENT, LOCAL)

    @property
    def restricted(self) -> bool:
        return self.projects is not None

    def describe_projects(self) -> str:
        return "any project" if self.projects is None else "projects " + ", ".join(sorted(self.projects))


UNRESTRICTED_LOCAL = Principal(LOCAL, LOCAL)


def _set_or_none(values: Iterable[str] | None) -> frozenset[str] | None:
    if values is None:
        return None
    values = list(values)
    return None if ANY in values else frozenset(values)


def _principal(name: str, entry: dict[str, Any], remote: bool) -> Principal:
    return Principal(name, entry.get("role", LOCAL), _set_or_none(entry.get("projects")),
                     _set_or_none(entry.get("kinds")), bool(entry.get("shared_write", False)), remote)


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, mode 0600 from the first byte."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class KeyRing:
    """The keys directory: the broker's certificate and the allow list of identities.

    Safe to share between the ZAP thread and the broker loop: every reload swaps
    whole immutable snapshots, never edits one in place."""

    def __init__(self, home: str | os.PathLike[str]) -> None:
        self.dir = keys_dir(home)
        self.path = self.dir / IDENTITIES
        self._mtime: float | None = None
        self._checked = 0.0
        self._by_name: dict[str, dict[str, Any]] = {}
        self._by_key: dict[str, str] = {}
        self._local = UNRESTRICTED_LOCAL
        self._lock = threading.Lock()
        self.reload()

    # ------------------------------------------------------------------ files

    def ensure_dir(self) -> None:
        (self.dir / "issued").mkdir(parents=True, exist_ok=True, mode=0o700)
        for d in (self.dir, self.dir / "issued"):
            os.chmod(d, 0o700)

    def _read(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {"format": 1, "identities": {}, "local": {}}
        except (OSError, ValueError) as exc:
            raise AuthError(f"{self.path} is unreadable: {exc}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("identities"), dict):
            raise AuthError(f"{self.path} is not an orchflow identities file")
        doc.setdefault("local", {})
        return doc

    def _save(self, doc: dict[str, Any]) -> None:
        self.ensure_dir()
        _write_private(self.path, json.dumps(doc, indent=2, sort_keys=True) + "\n")
        self.reload()

    def reload(self) -> None:
        """Read the allow list again if the file changed (or on first use)."""
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            mtime = None
        with self._lock:
            self._checked = time.monotonic()
            if mtime == self._mtime and self._by_name:
                return
            doc = self._read()
            by_name = {n: e for n, e in doc["identities"].items() if isinstance(e, dict)}
            self._by_key = {e["public"]: n for n, e in by_name.items() if isinstance(e.get("public"), str)}
            self._by_name = by_name
            local = doc.get("local") or {}
            self._local = Principal(LOCAL, LOCAL, _set_or_none(local.get("projects")),
                                    _set_or_none(local.get("kinds")), bool(local.get("shared_write", True)))
            self._mtime = mtime

    def refresh(self, every: float = 1.0) -> None:
        """Reload at most once per ``every`` seconds: cheap enough for the broker loop."""
        if time.monotonic() - self._checked >= every:
            try:
                self.reload()
            except AuthError as exc:  # a half-edited file must not stop the broker: keep the last good list
                self._checked = time.monotonic()
                log.error("keeping the previous identities: %s", exc)

    # ------------------------------------------------------------------ lookups

    @property
    def local(self) -> Principal:
        return self._local

    def principal(self, name: str) -> Principal | None:
        """The current rights of a remote identity; None if unknown or revoked."""
        entry = self._by_name.get(name)
        if entry is None or entry.get("revoked"):
            return None
        return _principal(name, entry, remote=True)

    def check_key(self, public_z85: str) -> tuple[str | None, str]:
        """(name, "ok") for an allowed key, (None, "unknown"|"revoked") otherwise."""
        name = self._by_key.get(public_z85)
        if name is None:
            return None, "unknown"
        if self._by_name[name].get("revoked"):
            return name, "revoked"
        return name, "ok"

    def identities(self) -> dict[str, dict[str, Any]]:
        return {n: dict(e) for n, e in self._by_name.items()}

    # ------------------------------------------------------------------ changes

    def broker_files(self) -> tuple[Path, Path]:
        return self.dir / f"{BROKER_CERT}.key", self.dir / f"{BROKER_CERT}.key_secret"

    def create_broker(self, force: bool = False) -> Path:
        """The broker's certificate; made once, replaced only with ``force`` (every
        remote peer then needs the new public key)."""
        public, secret = self.broker_files()
        if secret.exists() and not force:
            return public
        self.ensure_dir()
        for f in (public, secret):
            if f.exists():
                f.unlink()
        zmq.auth.create_certificates(str(self.dir), BROKER_CERT)
        for f in (public, secret):
            os.chmod(f, 0o600)
        return public

    def broker_keys(self) -> tuple[bytes, bytes]:
        """(public, secret) of the broker, made on first use."""
        _, secret = self.broker_files()
        if not secret.exists():
            self.create_broker()
        public_key, secret_key = zmq.auth.load_certificate(str(secret))
        if secret_key is None:
            raise AuthError(f"{secret} holds no secret key")
        return public_key, secret_key

    def add(self, role: str, name: str, projects: list[str] | None = None, kinds: list[str] | None = None,
            shared_write: bool = False, public_key: str | None = None) -> Path | None:
        """Allow a new identity.  Without ``public_key`` a certificate is made here and
        its secret file's path returned (to hand to that peer); with one, the peer
        keeps its secret and nothing is written but the allow-list entry."""
        if role not in ROLES:
            raise AuthError(f"role must be one of {ROLES}, not {role!r}")
        check_name(name)
        if role == CLIENT and not projects:
            raise AuthError("a client key needs at least one --project (or --project '*' for any)")
        if role == AGENT and not kinds:
            raise AuthError("an agent key needs at least one --kind (or --kind '*' for any)")
        doc = self._read()
        if name in doc["identities"]:
            raise AuthError(f"identity {name!r} exists; revoke it and choose another name to rotate its key")
        secret_path = None
        if public_key is None:
            self.ensure_dir()
            issued = self.dir / "issued"
            for suffix in (".key", ".key_secret"):
                if (issued / f"{name}{suffix}").exists():
                    (issued / f"{name}{suffix}").unlink()
            _, secret_file = zmq.auth.create_certificates(str(issued), name)
            for f in (issued / f"{name}.key", Path(secret_file)):
                os.chmod(f, 0o600)
            public, _ = zmq.auth.load_certificate(secret_file)
            public_key = public.decode()
            secret_path = Path(secret_file)
        elif len(public_key) != 40 or len(z85.decode(public_key.encode())) != 32:
            raise AuthError("a CURVE public key is 40 Z85 characters")
        if public_key in {e.get("public") for e in doc["identities"].values()}:
            raise AuthError("that public key already belongs to another identity")
        doc["identities"][name] = {"role": role, "public": public_key, "projects": projects,
                                   "kinds": kinds, "shared_write": shared_write, "revoked": False,
                                   "created": time.time()}
        self._save(doc)
        return secret_path

    def set_revoked(self, name: str, revoked: bool) -> None:
        doc = self._read()
        if name not in doc["identities"]:
            raise AuthError(f"no identity named {name!r}")
        doc["identities"][name]["revoked"] = revoked
        self._save(doc)

    def restrict_local(self, projects: list[str] | None, kinds: list[str] | None, shared_write: bool) -> None:
        doc = self._read()
        doc["local"] = {"projects": projects, "kinds": kinds, "shared_write": shared_write}
        self._save(doc)


# ---------------------------------------------------------------------------- peers


@dataclass(frozen=True)
class CurveCredentials:
    """What a client or an agent needs to reach a broker over TCP."""

    public: bytes
    secret: bytes
    server_public: bytes

    @classmethod
    def from_files(cls, secret_file: str | os.PathLike[str], broker_public_file: str | os.PathLike[str]
                   ) -> "CurveCredentials":
        try:
            public, secret = zmq.auth.load_certificate(str(secret_file))
            server_public, _ = zmq.auth.load_certificate(str(broker_public_file))
        except (OSError, ValueError) as exc:
            raise AuthError(f"cannot load CURVE keys: {exc}") from None
        if secret is None:
            raise AuthError(f"{secret_file} holds no secret key")
        return cls(public, secret, server_public)

    @classmethod
    def from_env(cls, home: str | os.PathLike[str] | None = None) -> "CurveCredentials":
        """``ORCHFLOW_KEY`` (this peer's ``.key_secret``) and ``ORCHFLOW_BROKER_KEY`` (the
        broker's ``broker.key``); the broker key defaults to the one in the keys dir."""
        secret = os.environ.get("ORCHFLOW_KEY")
        if not secret:
            raise AuthError("a tcp:// endpoint needs CURVE keys: set ORCHFLOW_KEY to this peer's .key_secret "
                            "file and ORCHFLOW_BROKER_KEY to the broker's broker.key (orchflow keys --help)")
        broker = os.environ.get("ORCHFLOW_BROKER_KEY")
        if not broker:
            home = home or os.environ.get("ORCHFLOW_HOME") or os.path.join(os.path.expanduser("~"), ".orchflow")
            broker = str(keys_dir(home) / f"{BROKER_CERT}.key")
        return cls.from_files(secret, broker)

    def apply(self, sock: zmq.Socket) -> None:
        sock.curve_serverkey = self.server_public
        sock.curve_publickey = self.public
        sock.curve_secretkey = self.secret


def credentials_for(endpoint: str, curve: CurveCredentials | None) -> CurveCredentials | None:
    """The keys a socket to ``endpoint`` must use: TCP is CURVE or nothing."""
    if endpoint.startswith("tcp://"):
        return curve if curve is not None else CurveCredentials.from_env()
    return curve


# ---------------------------------------------------------------------------- broker side


@dataclass
class AuthCounters:
    accepted: int = 0          # CURVE handshakes of allowed keys
    unknown_key: int = 0       # CURVE handshakes of keys not on the allow list
    revoked_key: int = 0       # ... of revoked keys
    handshake_failed: int = 0  # NULL/PLAIN peers and broken handshakes (mechanism mismatch, bad box)
    forbidden: int = 0         # messages refused because the identity may not do that
    revoked_messages: int = 0  # messages on a connection whose identity was revoked since


class _KeyCheck:
    """pyzmq's credentials-provider interface: called by the ZAP thread per handshake."""

    def __init__(self, ring: KeyRing, counters: AuthCounters) -> None:
        self.ring = ring
        self.counters = counters

    def callback(self, domain: str, key: bytes) -> bool:
        z85 = key.decode() if isinstance(key, bytes) else key
        self.ring.refresh(0.2)
        name, verdict = self.ring.check_key(z85)
        if verdict == "unknown":  # added a moment ago (`orchflow keys add`)? Read the file again first:
            self.ring.reload()    # a refused handshake ends the peer's session for good
            name, verdict = self.ring.check_key(z85)
        if verdict == "ok":
            self.counters.accepted += 1
            return True
        if verdict == "revoked":
            self.counters.revoked_key += 1
        else:
            self.counters.unknown_key += 1
        log.warning("refused a CURVE key (%s%s)", verdict, f", identity {name}" if name else "")
        return False


def _authenticator(ctx: zmq.Context, ring: KeyRing) -> Any:
    """A ZAP handler whose User-Id is the identity's name, not the key's Z85.

    zmq.auth.thread imports asyncio (4 MiB and 20 ms per process); only a broker
    with TCP endpoints needs it, so it is imported here, not by every agent and client."""
    from zmq.auth.thread import ThreadAuthenticator

    class Authenticator(ThreadAuthenticator):
        def curve_user_id(self, client_public_key: bytes) -> str:
            name, _ = ring.check_key(z85.encode(client_public_key).decode())
            return name or ""

    return Authenticator(ctx, log=logging.getLogger("orchflow.zap"))


class Gatekeeper:
    """The broker's side of authentication: CURVE on every TCP socket, ZAP in a thread,
    refused handshakes counted from socket monitors, and the Principal of each message."""

    HANDSHAKE_EVENTS = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                        | zmq.EVENT_HANDSHAKE_FAILED_AUTH)

    def __init__(self, ring: KeyRing) -> None:
        self.ring = ring
        self.counters = AuthCounters()
        self.monitors: list[zmq.Socket] = []
        self._authenticator: Any = None

    def start(self, ctx: zmq.Context) -> None:
        if self._authenticator is None:
            self._authenticator = _authenticator(ctx, self.ring)
            self._authenticator.start()
            self._authenticator.configure_curve_callback(ZAP_DOMAIN, _KeyCheck(self.ring, self.counters))

    def bind_tcp(self, sock: zmq.Socket, endpoint: str) -> None:
        """Bind ``sock`` to a TCP endpoint that speaks CURVE only.  Security options are
        copied into each listener at bind time, so ipc endpoints bound earlier on the
        same socket stay as they were."""
        if not endpoint.startswith("tcp://"):
            raise AuthError(f"remote endpoints are tcp://HOST:PORT, not {endpoint!r}")
        self.start(sock.context)
        public, secret = self.ring.broker_keys()
        sock.curve_server = True
        sock.curve_publickey = public
        sock.curve_secretkey = secret
        sock.zap_domain = ZAP_DOMAIN.encode()
        sock.zap_enforce_domain = True
        sock.bind(endpoint)
        self.monitors.append(sock.get_monitor_socket(self.HANDSHAKE_EVENTS))

    def on_monitor(self, mon: zmq.Socket) -> None:
        from zmq.utils.monitor import recv_monitor_message
        while mon.poll(0):
            event = recv_monitor_message(mon)
            if event["event"] != zmq.EVENT_HANDSHAKE_FAILED_AUTH:  # AUTH ones the ZAP check counted
                self.counters.handshake_failed += 1

    def principal_of(self, user_id: str | None) -> Principal | None:
        """The Principal a message came from: ``local`` over ipc (no User-Id); the named
        identity over TCP, or None once it is revoked or removed."""
        if user_id is None:
            return self.ring.local
        return self.ring.principal(user_id)

    def stats(self) -> dict[str, int]:
        return vars(self.counters).copy()

    def close(self) -> None:
        for mon in self.monitors:
            mon.close(linger=0)
        self.monitors.clear()
        if self._authenticator is not None:
            self._authenticator.stop()
            self._authenticator = None

