"""Ten of the largest legal frames in one SQS batch stay inside a 1024 MB function.

Each 50 MP 16-bit PNG needs about 145 MB to decode; ten threads decoding at once took the
process to 1.25 GB.  The decode budget (the memory less 512 MB) lets three decode at a time
in a 1024 MB function.  Measured in a child process: its high-water mark must stay under the
function's memory (it peaked at 460 MB here; 1.25 GB with a budget large enough for all ten).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
MEMORY_MB = 1024

CHILD = textwrap.dedent("""
    import json, struct, sys, tempfile
    from pathlib import Path
    from devstack.soak import _heavy_png
    from functions.classify import make_handler
    from shared.config import FunctionSettings
    from tests.fakes import build_tiny_bundle, publish_bundle, sqs_event
    from tests.memory_store import MemoryStore

    def status(field):
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024

    tmp = Path(tempfile.mkdtemp())
    store = MemoryStore("frames")
    build_tiny_bundle(tmp / "bundle")
    publish_bundle(store, tmp / "bundle")
    heavy = _heavy_png()
    keys = [f"incoming/heavy-{i}.png" for i in range(10)]
    for key in keys:
        store.put(key, heavy)
    settings = FunctionSettings(model_bucket="frames", model_cache_dir=str(tmp / "cache"), max_workers=10,
                                memory_mb=int(sys.argv[1]))
    handler = make_handler(settings, stores=lambda bucket: store)
    answer = handler(sqs_event("frames", keys), None)
    labels = [json.loads(store.objects["results/" + k[len("incoming/"):] + ".json"])["label"] for k in keys]
    print(json.dumps({"failures": answer["batchItemFailures"], "labels": labels, "peak_mb": status("VmHWM") / 1e6}))
""")


def run_batch(memory_mb: int) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-c", CHILD, str(memory_mb)], cwd=REPO, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["failures"] == [] and result["labels"] == ["bus"] * 10
    return result


def test_ten_of_the_largest_frames_in_one_batch_stay_inside_the_function() -> None:
    peak = run_batch(MEMORY_MB)["peak_mb"]
    assert peak < MEMORY_MB, f"peak {peak:.0f} MB in a {MEMORY_MB} MB function"
