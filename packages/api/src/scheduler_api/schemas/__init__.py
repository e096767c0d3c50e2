"""Request and response bodies (msgspec Structs) and their translation from the domain.

Request structs forbid unknown fields, so a field a client may not set (``owner_id``, ``id``,
``status``, …) is refused with 422 naming it instead of being silently dropped. Task bodies are
the exception: they are validated by :func:`scheduler_application.task_spec.parse_task_spec`,
which refuses server-owned fields the same way.
"""
