"""scheduler_api."""
