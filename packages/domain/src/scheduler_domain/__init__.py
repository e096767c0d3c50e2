"""scheduler_domain."""
