"""An SDK agent whose handlers say which thread ran them (used by test_placement.py).

    python placement_agent.py ENDPOINT HEARTBEAT
"""

import sys
import threading
import time

from agents import Agent

agent = Agent(sys.argv[1], name="placement", capacity=2, heartbeat_interval=float(sys.argv[2]))


def where() -> str:
    return "loop" if threading.current_thread() is threading.main_thread() else "pool"


@agent.handler("quick")
def quick(payload):
    """Quick unless the payload says how long to sleep."""
    if payload:
        time.sleep(payload)
    return where()


@agent.handler("affine")
def affine(payload):
    """Works on a worker thread only, as a sqlite3 connection made on one would."""
    if threading.current_thread() is threading.main_thread():
        raise RuntimeError("objects created in a thread can only be used in that same thread")
    return where()


@agent.handler("pinned", inline=False)
def pinned(payload):
    return where()


@agent.handler("block", inline=True)
def block(payload):
    time.sleep(payload)
    return where()


agent.install_signal_handlers()
agent.run()
