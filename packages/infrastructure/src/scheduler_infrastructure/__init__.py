"""scheduler_infrastructure."""
