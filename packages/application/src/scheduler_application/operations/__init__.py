"""Operations: what operators do to many things at once and how they look at the
cluster — bulk operations, queue control, status, gauges and history retention."""
