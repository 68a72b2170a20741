"""Entry points: the ``iris-scorer`` command line and the demo (the composition root).

This package is the only one that imports every adapter (``app``, ``consumers``,
``consumers.backfill``); see docs/ARCHITECTURE.md for why it is a package of its own.
"""
