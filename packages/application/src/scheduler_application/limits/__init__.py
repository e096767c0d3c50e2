"""Limits shared by many tasks and queues: named rate and concurrency limits (optionally
partitioned by owner or task) and the circuit breakers that hold runs bound for a failing
limit or host."""
