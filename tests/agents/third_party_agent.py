"""A third-party agent written with the SDK, as a user would (used by test_sdk.py)."""

import asyncio
import sys

from agents import Agent, Retry

agent = Agent(sys.argv[1], name="third-party", capacity=4)
attempts: dict[str, int] = {}


@agent.handler("greet")
def greet(payload, ctx):
    ctx.progress("thinking")
    return f"hello {payload['name']}"


@agent.handler("slow.async")
async def slow(payload, ctx):
    await asyncio.sleep(payload)
    return {"slept": payload, "project": ctx.project}


@agent.handler("flaky")
def flaky(payload, ctx):
    if ctx.attempt < 3:
        raise Retry(f"attempt {ctx.attempt} not yet")
    return ctx.attempt


agent.install_signal_handlers()
agent.run()
