"""Runs come to be: triggered by clients (one or a batch), fired from schedules, or made
by dependencies — every new run handed to dispatch through the relay's outbox."""
