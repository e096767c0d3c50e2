"""Sandboxed task processes: how ``shell`` and ``python`` runs are isolated from the worker.

The child side (:mod:`.supervisor`, :mod:`.host`) runs in freshly exec'd interpreters and
imports nothing but the standard library, so this package's ``__init__`` must stay free of
imports: ``python -m scheduler_worker.sandbox.supervisor`` executes it first.
"""
