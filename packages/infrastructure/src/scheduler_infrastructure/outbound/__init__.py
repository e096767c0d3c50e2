"""Outbound HTTP of the server side (webhook deliveries) under the same
:class:`~scheduler_domain.outbound.OutboundPolicy` as the ``http`` executor."""
