"""``charon router``: a queue in front of a pool of workers (state machine in ``state``, sockets in ``driver``)."""
