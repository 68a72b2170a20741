"""Test helper process: ``iris-scorer worker ARGS...`` as it runs in an image built without the
codec library (cramjam): aiokafka can then read gzip batches only, and every snappy, lz4 or zstd
batch fails to decode with ``UnsupportedCodecError``, the way a fetch the worker cannot get past
does. Any broker stores such a batch, so the test runs on every Kafka tier.

Usage: ``python tests/worker_without_codecs.py worker --http-port PORT``.
"""

from __future__ import annotations

import sys

sys.modules["cramjam"] = None  # type: ignore[assignment]  # ``import cramjam`` now raises ImportError

from iris_scorer.cli import main  # noqa: E402 - after the import block above

if __name__ == "__main__":
    sys.argv = ["iris-scorer", *sys.argv[1:]]
    main()
