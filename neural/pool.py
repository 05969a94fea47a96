"""The neural worker pool: worker processes serving ``neural.*`` tasks over the bus.

Kinds:

* ``neural.load``  ``{"name", "fann": <FANN_FLO_2.1 text>, "meta"?}`` -> ``{"name", "version"}``
* ``neural.run``   ``{"name", "version"?, "input": [..] | [[..], ..]}`` -> outputs, same shape
* ``neural.train`` ``{"name", "version"?, "data": {"inputs", "outputs"} | "data_text", "algorithm"?,
  "max_epochs"?, "desired_error"?, "cascade_neurons"?, "report_every"?}`` -> ``{"version", "mse", ...}``;
  progress events every ``report_every`` epochs; cancellable between epochs
* ``neural.list``  ``{}`` -> every model with its latest version and metadata
* ``neural.stats`` ``{}`` -> this worker's micro-batching counters

Models live in the shared LMDB memory, one namespace per project (``neural:<project>``;
the swarm's own models, the routing model among them, in ``neural`` for project
``orchflow``), versioned (``name@1``, ``name@2``, ...; the version counter is an atomic
``incr``), so every worker sees the same models and no project can replace
another's.  ``neural.load`` with ``"shared": true`` writes ``neural:shared`` (when the
submitter may write shared memory); run and train look in the task's project first,
then in ``shared``.  ``neural.run`` is a batch handler:
all run requests that reach a worker in one TASK message are evaluated as one
batched ``Network.run`` per model, which is the micro-batching that makes many
concurrent single-sample requests cheap.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections import OrderedDict
from typing import Any

import numpy as np

from agents.runtime import Agent, TaskContext
from bus.lifeline import die_with_parent
from bus.logsetup import configure_logging
from store import Memory

from .data import TrainingData
from .errors import NeuralError
from .network import BATCH, INCREMENTAL, QUICKPROP, RPROP, SARPROP, Network

NS = "neural"          # the swarm's own models (project "orchflow"), the routing model among them
log = logging.getLogger("orchflow.neural")
SYSTEM_PROJECT = "orchflow"
SHARED_PROJECT = "shared"


def models_namespace(project: str) -> str:
    return NS if project == SYSTEM_PROJECT else f"{NS}:{project}"


ALGORITHMS = {"incremental": INCREMENTAL, "batch": BATCH, "rprop": RPROP, "quickprop": QUICKPROP, "sarprop": SARPROP}


class ModelRegistry:
    """Versioned FANN models of one project in the shared swarm memory."""

    def __init__(self, memory: Memory, project: str = SYSTEM_PROJECT) -> None:
        self.memory = memory
        self.project = project
        self.ns = models_namespace(project)

    def scoped(self, project: str) -> "ModelRegistry":
        return self if project == self.project else ModelRegistry(self.memory, project)

    @staticmethod
    def _check_name(name: Any) -> str:
        if not isinstance(name, str) or not name or any(c in name for c in "@/\x00") or len(name) > 100:
            raise NeuralError(f"model name must be 1-100 characters without '@' or '/', got {name!r:.60}")
        return name

    def save(self, name: str, network: Network, meta: dict[str, Any] | None = None) -> int:
        """Store a new version.  The version entry is written before ``latest`` points
        at it, so a reader (neural.list, neural.run) never finds ``latest`` naming a
        version that is not there yet; ``latest`` only moves forward, even when two
        workers save the same model at once."""
        name = self._check_name(name)
        version = self._allocate(name)
        self.memory.put(self.ns, f"{name}@{version}", {"fann": network.dumps(), "created": time.time(),
                                                   "meta": meta or {}})
        while True:
            current = self.memory.get(self.ns, f"{name}/latest")
            if (current is not None and current >= version) or \
                    self.memory.cas(self.ns, f"{name}/latest", current, version):
                return version

    def _allocate(self, name: str) -> int:
        """The next version number, from a counter of its own (seeded from ``latest``
        for registries written before the counter existed)."""
        key = f"{name}/next"
        while True:
            last = self.memory.get(self.ns, key)
            if last is None:
                last = self.memory.get(self.ns, f"{name}/latest") or 0
                if self.memory.cas(self.ns, key, None, last + 1):
                    return last + 1
            elif self.memory.cas(self.ns, key, last, last + 1):
                return last + 1

    def latest(self, name: str) -> int:
        version = self.memory.get(self.ns, f"{self._check_name(name)}/latest")
        if not version:
            raise NeuralError(f"no model named {name!r}")
        return int(version)

    def load(self, name: str, version: int | None = None) -> tuple[int, str, dict[str, Any]]:
        version = self.latest(name) if version is None else int(version)
        entry = self.memory.get(self.ns, f"{self._check_name(name)}@{version}")
        if entry is None:
            raise NeuralError(f"model {name!r} has no version {version}")
        return version, entry["fann"], entry.get("meta", {})

    def list(self) -> list[dict[str, Any]]:
        out = []
        for key, latest in self.memory.items(self.ns):
            if key.endswith("/latest"):
                name = key[: -len("/latest")]
                _, _, meta = self.load(name, latest)
                out.append({"name": name, "latest": latest, "meta": meta})
        return out


class NeuralWorker:
    def __init__(self, registry: ModelRegistry, cache_size: int = 32) -> None:
        self.registry = registry
        self.cache: OrderedDict[tuple[str, str, int], Network] = OrderedDict()
        self.cache_size = cache_size
        self.stats = {"batches": 0, "requests": 0, "samples": 0, "max_batch": 0}

    def _registry_of(self, name: Any, project: str) -> ModelRegistry:
        """The task's project's registry, or ``shared`` when only that one has the model."""
        own = self.registry.scoped(project)
        if project != SHARED_PROJECT and isinstance(name, str):
            shared = self.registry.scoped(SHARED_PROJECT)
            try:
                own.latest(name)
            except NeuralError:
                try:
                    shared.latest(name)
                    return shared
                except NeuralError:
                    pass
        return own

    def network(self, name: str, version: int | None, project: str = SYSTEM_PROJECT) -> tuple[int, Network]:
        registry = self._registry_of(name, project)
        version = registry.latest(name) if version is None else int(version)
        key = (registry.ns, name, version)
        net = self.cache.get(key)
        if net is None:
            _, text, _ = registry.load(name, version)
            net = Network.loads(text)
            self.cache[key] = net
            if len(self.cache) > self.cache_size:
                self.cache.popitem(last=False)
        else:
            self.cache.move_to_end(key)
        return version, net

    # ------------------------------------------------------------------ handlers

    def load(self, payload: Any, ctx: TaskContext) -> dict[str, Any]:
        if not isinstance(payload, dict) or not isinstance(payload.get("fann"), str):
            raise NeuralError("neural.load needs {'name': str, 'fann': <FANN file text>}")
        project = ctx.project
        if payload.get("shared") is True:
            if not ctx.shared_write:
                raise NeuralError(f"project {ctx.project!r} may not write shared models")
            project = SHARED_PROJECT
        net = Network.loads(payload["fann"])  # validates before anything is stored
        version = self.registry.scoped(project).save(payload.get("name"), net, payload.get("meta"))
        return {"name": payload["name"], "version": version, "inputs": net.num_input, "outputs": net.num_output}

    def create(self, payload: Any, ctx: TaskContext) -> dict[str, Any]:
        """A new network, as fann_create_standard/shortcut make it, stored as version 1
        (or the next): the first step of training from a terminal or the IDE."""
        from .activation import Activation
        if not isinstance(payload, dict):
            raise NeuralError("neural.create payload must be a map")
        layers = payload.get("layers")
        if (not isinstance(layers, list) or not 2 <= len(layers) <= 16
                or not all(isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= 100_000 for n in layers)):
            raise NeuralError("neural.create needs 'layers': 2..16 sizes of 1..100000 neurons, e.g. [2, 4, 1]")
        names = {a.name.lower(): a for a in Activation}
        chosen = {}
        for field in ("activation", "output_activation"):
            value = payload.get(field, "sigmoid_symmetric")
            if not isinstance(value, str) or value.lower() not in names:
                raise NeuralError(f"neural.create '{field}' must be one of {sorted(names)}")
            chosen[field] = names[value.lower()]
        seed = payload.get("seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2 ** 32):
            raise NeuralError("neural.create 'seed' must be an int in 0..2**32-1")
        make = Network.create_shortcut if payload.get("shortcut") is True else Network.create_standard
        net = make(*layers, seed=seed)
        hidden = len(net.layers) - 1
        for layer in range(1, hidden + 1):
            net.set_activation(chosen["activation"], layer=layer)
        net.set_activation(chosen["output_activation"], layer=hidden + 1)
        version = self.registry.scoped(ctx.project).save(payload.get("name"), net, {"created": layers})
        log.info("created %s/%s v%d, layers %s", ctx.project, payload["name"], version, layers)
        return {"name": payload["name"], "version": version, "inputs": net.num_input, "outputs": net.num_output,
                "layers": layers}

    def run_batch(self, contexts: list[TaskContext]) -> list[Any]:
        """Group requests by model; one batched run per model; results split back."""
        results: list[Any] = [None] * len(contexts)
        groups: dict[tuple[str, int], list[tuple[int, np.ndarray, bool]]] = {}
        for i, ctx in enumerate(contexts):
            try:
                p = ctx.payload
                if not isinstance(p, dict) or "input" not in p:
                    raise NeuralError("neural.run needs {'name': str, 'input': [...]}")
                version, net = self.network(p.get("name"), p.get("version"), ctx.project)
                x = np.asarray(p["input"], dtype=np.float64)
                single = x.ndim == 1
                x2 = x.reshape(1, -1) if single else x
                if x2.ndim != 2 or x2.shape[1] != net.num_input:
                    raise NeuralError(f"model {p.get('name')!r} takes {net.num_input} inputs, got shape {x.shape}")
                groups.setdefault((ctx.project, p["name"], version), []).append((i, x2, single))
            except Exception as exc:  # one bad request fails alone
                results[i] = exc
        for (project, name, version), items in groups.items():
            _, net = self.network(name, version, project)
            X = np.vstack([x for _, x, _ in items])
            Y = net.run(X) if len(X) > 1 or not items[0][2] else net.run(X[0]).reshape(1, -1)
            self.stats["batches"] += 1
            self.stats["samples"] += len(X)
            self.stats["max_batch"] = max(self.stats["max_batch"], len(items))
            row = 0
            for i, x, single in items:
                out = Y[row:row + len(x)]
                row += len(x)
                results[i] = out[0].tolist() if single else out.tolist()
        self.stats["requests"] += len(contexts)
        return results

    def _run_one(self, ctx: TaskContext) -> Any:
        result = self.run_batch([ctx])[0]
        if isinstance(result, BaseException):
            raise result
        return result

    def train(self, payload: Any, ctx: TaskContext) -> dict[str, Any]:
        if not isinstance(payload, dict):
            raise NeuralError("neural.train payload must be a map")
        version, base = self.network(payload.get("name"), payload.get("version"), ctx.project)
        net = Network.loads(base.dumps())  # train a copy; the cached version stays as it was
        data = payload.get("data")
        if isinstance(payload.get("data_text"), str):
            data = TrainingData.loads(payload["data_text"])
        elif isinstance(data, dict):
            data = TrainingData(np.asarray(data["inputs"], dtype=np.float64), np.asarray(data["outputs"], dtype=np.float64))
        else:
            raise NeuralError("neural.train needs 'data' {'inputs', 'outputs'} or 'data_text'")
        if "algorithm" in payload:
            algo = ALGORITHMS.get(payload["algorithm"])
            if algo is None:
                raise NeuralError(f"algorithm must be one of {sorted(ALGORITHMS)}")
            net.training_algorithm = algo
        desired = float(payload.get("desired_error", 0.0))
        every = max(1, int(payload.get("report_every", 10)))
        started = time.monotonic()
        first_mse: list[float] = []
        last: dict[str, Any] = {"epoch": 0}  # the latest epoch the trainer reported

        def report(epoch: int, mse: float, bit_fail: int) -> bool:
            if not first_mse:
                first_mse.append(mse)
            last.update(epoch=epoch, mse=mse, bit_fail=bit_fail)
            if epoch % every == 0:
                ctx.progress({"epoch": epoch, "mse": mse, "bit_fail": bit_fail})
            ctx.check_cancelled()
            return True

        if payload.get("cascade_neurons"):
            mse = net.cascade_train(data, int(payload["cascade_neurons"]), desired, callback=report)
        else:
            mse = net.train(data, int(payload.get("max_epochs", 100)), desired, callback=report)
        epochs = last["epoch"]
        if epochs % every:  # the last epoch is always shown, whatever the report interval
            ctx.progress(dict(last))
        meta = {"mse": mse, "trained_from": version, "samples": data.num_data,
                "seconds": round(time.monotonic() - started, 3), "project": ctx.project}
        new_version = self.registry.scoped(ctx.project).save(payload["name"], net, meta)  # never into shared
        log.info("trained %s/%s v%d from v%d: %d epochs, MSE %.3g, %.2fs", ctx.project, payload["name"],
                 new_version, version, last["epoch"], mse, meta["seconds"])
        result = {"name": payload["name"], "version": new_version, "mse": mse, "epochs": epochs,
                  "hidden_layers": len(net.layers) - 1}
        warning = training_warning(first_mse[0] if first_mse else mse, mse, desired)
        if warning:
            result["warning"] = warning
        return result

    def train_router(self, payload: Any, ctx: TaskContext) -> dict[str, Any]:
        """Retrain the routing model on the latest outcome records (incrementally from the last version)."""
        from . import routing_model as R
        if ctx.project != SYSTEM_PROJECT:  # the broker's own task; no project may retrain its router
            raise NeuralError(f"neural.train_router belongs to project {SYSTEM_PROJECT!r}")
        payload = payload if isinstance(payload, dict) else {}
        limit = int(payload.get("max_records", 5000))
        memory = self.registry.memory
        records = [v for _, v in memory.items(R.OUTCOMES)][-limit:]
        try:
            version, base = self.network(R.MODEL_NAME, None, SYSTEM_PROJECT)
            base = Network.loads(base.dumps())
        except NeuralError:
            version, base = 0, None
        net, meta = R.train(base, records, int(payload.get("epochs", 200)))
        meta["trained_from"] = version
        new_version = self.registry.scoped(SYSTEM_PROJECT).save(R.MODEL_NAME, net, meta)
        ctx.progress({"epoch": int(payload.get("epochs", 200)), "mse": net.mse})
        return {"version": new_version, **{k: v for k, v in meta.items() if k != "pairs"}}

    def list(self, ctx: TaskContext) -> list[dict[str, Any]]:
        """The task's project's models, then the shared ones it can also run."""
        own = self.registry.scoped(ctx.project).list()
        if ctx.project == SHARED_PROJECT:
            return own
        names = {m["name"] for m in own}
        return own + [dict(m, shared=True) for m in self.registry.scoped(SHARED_PROJECT).list()
                      if m["name"] not in names]

    def register(self, agent: Agent, batching: bool = True) -> None:
        agent.add_handler("neural.create", self.create, inline=True)
        agent.add_handler("neural.load", self.load, inline=True)
        if batching:
            agent.add_batch_handler("neural.run", self.run_batch)
        else:  # one evaluation per request: the baseline micro-batching is measured against
            agent.add_handler("neural.run", lambda payload, ctx: self._run_one(ctx), inline=True)
        agent.add_handler("neural.train", self.train)
        agent.add_handler("neural.train_router", self.train_router)
        agent.add_handler("neural.list", lambda payload, ctx: self.list(ctx), inline=True)
        agent.add_handler("neural.stats", lambda payload: dict(self.stats), inline=True)


def training_warning(first_mse: float, mse: float, desired: float) -> str | None:
    """Why a finished training may not be what the caller wanted: it ended far from the
    desired error, or hardly learned at all (xor with a too-small network sits at 1.0)."""
    if desired > 0 and mse > 10 * desired:
        return (f"ended at MSE {mse:.4g}, far from the desired {desired:g}: try more epochs, "
                f"another algorithm or more hidden neurons")
    if first_mse > 0 and mse >= 0.9 * first_mse and mse > 0.01:
        return f"MSE hardly moved ({first_mse:.4g} -> {mse:.4g}): the network may be too small or the data unscaled"
    return None


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m neural.pool", description=__doc__.split("\n")[0])
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--memory", default=None, help="LMDB directory of the swarm memory (default $ORCHFLOW_HOME/memory)")
    ap.add_argument("--name", default="neural")
    ap.add_argument("--capacity", type=int, default=256)
    ap.add_argument("--heartbeat", type=float, default=1.0)
    ap.add_argument("--kinds", default=None, help="ignored; neural kinds are fixed")
    ap.add_argument("--no-batching", action="store_true", help="evaluate run requests one by one (for benchmarks)")
    args = ap.parse_args(argv)
    die_with_parent()  # never outlive orchflow-launch
    configure_logging()
    agent = Agent(args.endpoint, name=args.name, capacity=args.capacity, heartbeat_interval=args.heartbeat)
    NeuralWorker(ModelRegistry(Memory(args.memory))).register(agent, batching=not args.no_batching)
    agent.install_signal_handlers()
    agent.run()


if __name__ == "__main__":
    main()
