"""Test agent for workflows: 'wf.step' reports when it ran and what its parents returned."""

import sys
import time

from agents import Agent

agent = Agent(sys.argv[1], name=sys.argv[2], capacity=int(sys.argv[3]))
runs: dict[str, int] = {}


@agent.handler("wf.step")
def step(payload, ctx):
    name = payload["name"]
    runs[name] = runs.get(name, 0) + 1
    start = time.time()
    time.sleep(payload.get("sleep", 0.05))
    if runs[name] <= payload.get("fail_runs", 0):
        raise RuntimeError(f"{name} fails on run {runs[name]}")
    return {"name": name, "parents": ctx.parents, "start": start, "end": time.time(), "run": runs[name]}


agent.install_signal_handlers()
agent.run()
