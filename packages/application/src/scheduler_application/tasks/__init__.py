"""Tasks: their definitions, as use cases, as files (apply/export), and their graph."""
