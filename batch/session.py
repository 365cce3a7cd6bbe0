"""The Spark session: Java checked first, logs quiet, speculation off, local runs bound to 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from shared.errors import JavaNotFoundError, SparkJobError

MIN_JAVA = 17
QUIET_LOG4J = Path(__file__).with_name("log4j2-quiet.properties")
REPO_ROOT = Path(__file__).resolve().parents[1]

MALLOC_ARENA_MAX = "2"
# For every job: a duplicate task would score (and write) the same frames twice.
COMMON_CONF = {
    "spark.speculation": "false",
    "spark.python.worker.reuse": "true",  # one bundle load per Python worker, not per task
    "spark.ui.showConsoleProgress": "false",  # we print our own progress line
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    # glibc gives every thread that allocates its own heap arena, and freed memory stays in it: with
    # 4 download threads decoding large JPEGs a Python worker peaked at 408-417 MB on the kit's
    # 5-15 MP photos, 339-376 MB with two arenas (same CPU per frame).
    "spark.executorEnv.MALLOC_ARENA_MAX": MALLOC_ARENA_MAX,
}
# A laptop or CI run: no UI, nothing listening beyond 127.0.0.1, few shuffle partitions.
LOCAL_CONF = {
    "spark.ui.enabled": "false",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.driver.host": "127.0.0.1",
    "spark.sql.shuffle.partitions": "4",
}


def java_binary(env: Mapping[str, str]) -> str | None:
    home = env.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return str(Path(home) / "bin" / "java")
    return shutil.which("java", path=env.get("PATH"))


def check_java(env: Mapping[str, str]) -> int:
    """The Java major version; raises ``JavaNotFoundError`` without one of at least 17."""
    java = java_binary(env)
    advice = "install Java 17 (Debian/Ubuntu: apt-get install openjdk-17-jre-headless) or set JAVA_HOME"
    if java is None:
        raise JavaNotFoundError(f"Spark needs Java {MIN_JAVA} or newer and none was found; {advice}.")
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise JavaNotFoundError(f"{java} -version failed ({exc}); {advice}.") from None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if match is None:
        raise JavaNotFoundError(f"{java} -version did not say its version; {advice}.")
    major = int(match.group(2)) if match.group(1) == "1" else int(match.group(1))  # "1.8.0" is Java 8
    if major < MIN_JAVA:
        raise JavaNotFoundError(f"Spark needs Java {MIN_JAVA} or newer, and {java} is Java {major}; {advice}.")
    return major


def is_local(master: str) -> bool:
    return master.startswith("local")


def build_session(master: str | None, *, verbose: bool = False, app_name: str = "cctv-batch-score",
                  conf: Mapping[str, str] | None = None) -> Any:
    """A SparkSession; ``master=None`` attaches to the one ``spark-submit`` set up.

    For a local master the Python workers run this interpreter and can import this
    repository; on a cluster, ``spark-submit --py-files/--archives`` provide both.
    """
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name)
    settings = dict(COMMON_CONF)
    if master is not None:
        builder = builder.master(master)
        if is_local(master):
            settings.update(LOCAL_CONF)
            settings.update(local_python_conf())
        if not verbose:
            settings["spark.driver.extraJavaOptions"] = f"-Dlog4j2.configurationFile={QUIET_LOG4J.as_uri()}"
    settings.update(conf or {})
    for key, value in settings.items():
        builder = builder.config(key, value)
    log = None if verbose or master is None else jvm_log_path()
    try:
        with _stderr_to(log), _worker_python(master is not None and is_local(master)):
            session = builder.getOrCreate()
    except Exception as exc:  # noqa: BLE001 - a JVM that would not start: one line, not its trace
        where = f"its log is {log}" if log else "run with --verbose to see its logs"
        raise SparkJobError(f"Spark did not start ({first_line(exc)}); {where}.") from None
    if not verbose:
        session.sparkContext.setLogLevel("ERROR")
    return session


def jvm_log_path() -> Path:
    """One file per user, started afresh by each run (so runs do not pile logs up in the temp folder)."""
    return Path(tempfile.gettempdir()) / f"cctv-batch-spark-{os.getuid()}.log"


@contextlib.contextmanager
def _stderr_to(path: Path | None) -> Iterator[None]:
    """Start the JVM with its stderr in ``path``: the JVM (and the Python workers it forks) keep that
    descriptor for life, so Spark's start-up banner, JVM warnings and worker noise stay out of the
    terminal, while this process's own stderr is restored at once."""
    if path is None:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(path, "wb") as log:
            os.dup2(log.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def local_python_conf() -> dict[str, str]:
    """Local workers import this repository: Spark adds ``spark.executorEnv.PYTHONPATH`` to the path of the
    Python workers it starts, and to nothing else (like MALLOC_ARENA_MAX in COMMON_CONF)."""
    return {"spark.executorEnv.PYTHONPATH": str(REPO_ROOT)}


@contextlib.contextmanager
def _worker_python(local: bool) -> Iterator[None]:
    """Local workers run this interpreter, not whatever ``python3`` is on PATH.

    pyspark reads the workers' interpreter from ``PYSPARK_PYTHON`` once, as the context starts
    (``spark.pyspark.python`` only counts under spark-submit), so it is set for that moment and
    then restored: ``batch.score.run`` used as a library leaves its caller's environment as it was.
    """
    if not local or os.environ.get("PYSPARK_PYTHON"):
        yield
        return
    saved = os.environ.get("PYSPARK_PYTHON")
    os.environ["PYSPARK_PYTHON"] = sys.executable
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("PYSPARK_PYTHON", None)
        else:
            os.environ["PYSPARK_PYTHON"] = saved


def first_line(exc: BaseException) -> str:
    """The useful line of a Spark/Py4J error: the Python exception raised in a task, or the first line."""
    text = str(exc)
    for marker in ("shared.errors.", "Exception: ", "Error: "):
        for line in text.splitlines():
            if marker in line and not line.lstrip().startswith(("at ", "File ")):
                return line.strip()[:400]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:400]
