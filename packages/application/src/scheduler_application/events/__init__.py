"""Events: the ordered log of every transition and change, and its readers — the SSE
stream, webhooks and the broker topic."""
