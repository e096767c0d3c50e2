"""scheduler_dispatcher."""
