"""iris-scorer's model core: data, training stages, registry, loading, the one scoring function,
drift and backfill. ``app`` and ``consumers`` are thin adapters over this package."""
