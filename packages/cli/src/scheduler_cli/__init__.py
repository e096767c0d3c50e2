"""scheduler_cli."""
