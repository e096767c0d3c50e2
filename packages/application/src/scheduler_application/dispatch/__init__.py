"""Dispatch: from a new or pending run to a message in the queue.

:mod:`.outbox` (the one way in, around a unit of work) → :mod:`.gates` (concurrency cap,
eligibility, :mod:`.rate_limiting`, :mod:`.routing`, in that order) → :mod:`.publishing`
(staged in the transaction or published after it). :mod:`.recovery` sends again queued runs
whose message may be lost; :mod:`.relay` holds the state all of them share, one per process.
"""
