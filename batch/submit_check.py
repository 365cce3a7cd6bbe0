"""``python -m batch.submit_check``: ``spark-submit`` on ``local[2]`` with exactly the artefacts of ``batch.dist``.

A moto server, a tiny bundle and a few frames (one of them broken); then ``spark-submit``
runs ``batch/spark_main.py`` from an empty folder with nothing of this repository on
``PYTHONPATH``: the code comes from ``--py-files build/batch/cctv_batch.zip``, and the
executors' Python from ``--archives build/batch/env.tar.gz#env``
(``spark.pyspark.python=./env/bin/python``).  In local mode the executors live in the
driver's JVM and start Python from its working folder, not from where Spark unpacks
``--archives`` (a YARN or Kubernetes container's working folder is that place), so the
same archive is also unpacked into the submit folder as ``./env``, as a container would
have it; the driver runs it too.  A second submit must score nothing.  Exit 0 when both
runs are right.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DIST = REPO / "build" / "batch"


def spark_submit() -> str:
    candidate = Path(sys.executable).parent / "spark-submit"
    return str(candidate) if candidate.exists() else "spark-submit"


def spark_home() -> str:
    import pyspark

    return str(Path(pyspark.__file__).parent)


def seed(endpoint: str, bucket: str, work: Path) -> int:
    """A bucket with a tiny bundle, 6 frames on 2 cameras and a broken one; how many inputs."""
    from PIL import Image

    from devstack.samples import jpeg_bytes
    from shared.config import S3Settings
    from shared.storage import ObjectStore, make_client
    from tests.fakes import build_tiny_bundle, publish_bundle

    store = ObjectStore(make_client(S3Settings(endpoint, "us-east-1")), bucket)
    store.client.create_bucket(Bucket=bucket)
    build_tiny_bundle(work / "bundle", with_top=True)
    publish_bundle(store, work / "bundle")
    for i in range(6):
        colour = (220, 30, 30) if i % 2 else (30, 30, 220)
        store.put(f"incoming/cam{i % 2}/{i}.jpg", jpeg_bytes(Image.new("RGB", (96, 64), colour)))
    store.put("incoming/cam0/broken.jpg", b"not a frame")
    return 7


def submit(endpoint: str, bucket: str, work: Path, driver_python: Path, summary: Path) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON")}
    env.update({"PYSPARK_DRIVER_PYTHON": str(driver_python), "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing", "AWS_REGION": "us-east-1"})
    env.setdefault("SPARK_HOME", spark_home())  # a pip-installed pyspark is its own Spark installation
    quiet = REPO / "batch" / "log4j2-quiet.properties"
    cmd = [spark_submit(), "--master", "local[2]", "--py-files", str(DIST / "cctv_batch.zip"),
           "--archives", f"{DIST / 'env.tar.gz'}#env", "--conf", "spark.pyspark.python=./env/bin/python",
           "--conf", f"spark.pyspark.driver.python={driver_python}",
           "--conf", "spark.ui.enabled=false", "--conf", "spark.driver.bindAddress=127.0.0.1",
           "--conf", "spark.driver.host=127.0.0.1",
           "--driver-java-options", f"-Dlog4j2.configurationFile={quiet.as_uri()}",
           str(REPO / "batch" / "spark_main.py"), "--bucket", bucket, "--endpoint-url", endpoint,
           "--no-progress", "--frames-per-task", "2", "--summary-out", str(summary),
           "--cache-dir", str(work / "model-cache")]
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=600)
    return proc.returncode, proc.stdout + proc.stderr


def main() -> int:
    from devstack.moto_server import DUMMY_CREDENTIALS, MotoServer

    for name in ("cctv_batch.zip", "env.tar.gz"):
        if not (DIST / name).is_file():
            print(f"batch.submit_check: {DIST / name} is missing; run `make batch-dist` first.", file=sys.stderr)
            return 2
    os.environ.update(DUMMY_CREDENTIALS)
    with tempfile.TemporaryDirectory(prefix="cctv-submit-") as tmp, MotoServer() as server:
        work = Path(tmp)
        with tarfile.open(DIST / "env.tar.gz") as tar:
            tar.extractall(work / "env", filter="fully_trusted")
        inputs = seed(server.endpoint_url, "submit-check", work)
        failures = []
        for run, expected in ((1, inputs), (2, 0)):
            started = time.perf_counter()
            code, output = submit(server.endpoint_url, "submit-check", work, Path("./env/bin/python"),
                                  work / f"summary-{run}.json")
            took = time.perf_counter() - started
            if code != 0 or not (work / f"summary-{run}.json").is_file():
                print(output[-4000:], file=sys.stderr)
                print(f"batch.submit_check: spark-submit run {run} exited {code}", file=sys.stderr)
                return 1
            doc = json.loads((work / f"summary-{run}.json").read_text())
            total = doc["total"]
            print(f"batch.submit_check: run {run}: {doc['scored']} scored in {doc['tasks']} task(s), "
                  f"{total['ok']} ok, {total['error']} error, {total['failed']} failed ({took:.0f} s)")
            if doc["scored"] != expected or (total["ok"], total["error"], total["failed"]) != (6, 1, 0):
                failures.append(f"run {run}: expected {expected} scored, 6 ok, 1 error; got {doc['scored']}, {total}")
            if run == 1 and any(w["bundle_loads"] != 1 for w in doc["workers"].values()):
                failures.append(f"bundle loads per worker: {doc['workers']}")
        for failure in failures:
            print(f"batch.submit_check: {failure}", file=sys.stderr)
        return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
