"""Execution: workers claim runs under leases, keep them, and report how they ended;
lost attempts are reaped; failures retried or dead-lettered."""
