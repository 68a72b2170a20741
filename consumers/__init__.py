"""FastStream stream-worker adapter over :mod:`ml`, and the embedded Kafka-protocol broker."""
