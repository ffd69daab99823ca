"""``charon worker``: simulates what a router gives it (socket loop in ``driver``, engine thread in ``simulation``)."""
