"""orchflow-launch: start, supervise and stop the swarm."""
