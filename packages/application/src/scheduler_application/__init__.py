"""scheduler_application: the use cases of the scheduler and the ports they depend on.

Use cases (one concept per module, dependencies as keyword-only constructor arguments):
:mod:`tasks` and :mod:`task_spec` (task definitions), :mod:`runs` (trigger, cancel, retry),
:mod:`execution` (the worker protocol: claim, heartbeat, complete, release), :mod:`dispatch`
(the one way from new runs to the queue: outbox, gates, publishing, recovery), :mod:`reaper`
(expired leases), :mod:`workers`, :mod:`accounts`. Access rules live in
:mod:`auth_context`; in-memory fakes of every port in :mod:`testing`.
"""
