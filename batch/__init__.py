"""Batch scoring on Apache Spark: a whole bucket, many cameras, the function's exact results.

``python -m batch.score`` (or ``spark-submit batch/spark_main.py``) lists the frames under
the input prefix on the driver, drops those already scored with the same model and ETag
(the Parquet results table is the record), and runs :class:`functions.service.ClassifyService`
on the executors through ``mapInPandas``.  Every frame gets ``results/<key>.json`` exactly as
the function writes it, and one row in ``tables/results/model_version=<V>/``.

Modules: :mod:`batch.cli` (flags), :mod:`batch.plan` (listing, key files, resume,
partitions), :mod:`batch.worker` (what runs on the executors), :mod:`batch.table` (the
Parquet table and the summary), :mod:`batch.session` (the Spark session),
:mod:`batch.score` (the driver), :mod:`batch.dist` (the archives for ``spark-submit``).
"""
