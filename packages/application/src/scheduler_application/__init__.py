"""scheduler_application."""
