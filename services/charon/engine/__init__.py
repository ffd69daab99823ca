"""Photon engines behind one :class:`~charon.engine.base.Simulator` interface (numpy side of charon)."""
