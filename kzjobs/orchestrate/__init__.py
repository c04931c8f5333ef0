"""Orchestration: DAG run plans, the launcher, its runner, operators, connections."""
