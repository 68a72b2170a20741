"""Starlette REST adapter over :mod:`ml`."""
