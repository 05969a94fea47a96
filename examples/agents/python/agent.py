"""The example agents' three kinds, written with the orchflow Python SDK.

Serves <prefix>echo, <prefix>fail and <prefix>sleep, as the Node and C examples do;
the prefix is $ORCHFLOW_KIND_PREFIX ("py." by default; the conformance kit sets
"conformance."), the broker $ORCHFLOW_BACKEND (default: the local swarm's).

    python examples/agents/python/agent.py
"""

import os

from agents import Agent

PREFIX = os.environ.get("ORCHFLOW_KIND_PREFIX", "py.")
agent = Agent(os.environ.get("ORCHFLOW_BACKEND"), name=f"py-{os.getpid()}", capacity=4)


@agent.handler(PREFIX + "echo")
def echo(payload, ctx):
    return payload


@agent.handler(PREFIX + "fail")
def fail(payload, ctx):
    raise RuntimeError(payload if isinstance(payload, str) else "failed on purpose")


@agent.handler(PREFIX + "sleep")
def sleep(payload, ctx):
    ctx.cancelled.wait(float(payload))  # wakes at once on CANCEL
    ctx.check_cancelled()
    return payload


if __name__ == "__main__":
    agent.install_signal_handlers()  # SIGTERM drains: capacity 0, finish, DISCONNECT
    agent.run()
