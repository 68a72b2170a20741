"""The file ``spark-submit`` runs: the ``iris-scorer`` command line under a Spark driver.

    spark-submit --master spark://host:7077 "$(python -c 'import iris_scorer.spark_submit as m; print(m.__file__)')" \\
        backfill --engine spark --input abfss://…/in/ --output abfss://…/out.parquet

Under ``spark-submit`` (or with ``--master`` left out) the master comes from Spark's own settings
(``spark-submit --master``, ``spark-defaults.conf``); ``--master`` on our command line overrides them.
"""

from __future__ import annotations

from iris_scorer.cli import main

if __name__ == "__main__":
    main()
