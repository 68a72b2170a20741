"""The batch adapter: rescoring files or a topic range with :func:`ml.predict.score`."""
