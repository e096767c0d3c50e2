"""Sandboxed task processes: how ``shell`` and ``python`` runs are isolated from the worker.

The child side (:mod:`.supervisor`, :mod:`.host`) runs in freshly exec'd interpreters, by
path (``python -I -S .../supervisor.py``), and imports nothing but the standard library.
"""
