"""Templates: task types with a parameter schema and schedule bounds, and users'
subscriptions to them (their tasks, kept in step with the template's versions)."""
