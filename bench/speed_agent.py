"""An agent whose speed depends on the task kind, as in a heterogeneous swarm (for bench/routing.py).

    python bench/speed_agent.py ENDPOINT NAME work.x=0.005,work.y=0.05
"""

import sys
import time

sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.dirname(__import__("os").path.abspath(__file__))))

from agents import Agent  # noqa: E402

endpoint, name, table = sys.argv[1], sys.argv[2], sys.argv[3]
speeds = {k: float(v) for k, v in (item.split("=") for item in table.split(","))}
agent = Agent(endpoint, name=name, capacity=1)
for kind, seconds in speeds.items():
    agent.add_handler(kind, lambda payload, ctx, s=seconds: time.sleep(s) or s)
agent.install_signal_handlers()
agent.run()
