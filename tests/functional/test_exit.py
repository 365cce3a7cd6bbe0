"""A process that exits right after a handler call exits cleanly, however far the model load got.

The model's files and sessions load on a thread.  When every record of the call is a
repeat (its result exists), the call returns before the sessions are open; if the process
then exits while that thread is inside onnxruntime (a daemon thread then), the process could
abort with "terminate called without an active exception" (SIGABRT).  The abort depends on
timing; the test checks what prevents it: the exit waits for the load thread.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent("""
    import atexit, sys, tempfile
    from pathlib import Path
    import numpy as np
    from shared import runtime
    from shared.config import FunctionSettings
    from functions.classify import make_handler
    from tests.fakes import build_tiny_bundle, publish_bundle, s3_event
    from tests.memory_store import MemoryStore

    def slow_sessions(bundle_dir, manifest, threads=None):
        # Keep the load thread inside onnxruntime's C++, the GIL released, for a second or two:
        # a session whose initialisation constant-folds a chain of 1200x1200 matrix products.
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
        w = numpy_helper.from_array(np.full((1200, 1200), 1e-3, np.float32), "w")
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1200])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1200])
        nodes = [helper.make_node("MatMul", ["w" if i == 0 else f"h{i}", "w"], [f"h{i + 1}"]) for i in range(12)]
        nodes.append(helper.make_node("MatMul", ["x", "h12"], ["y"]))
        graph = helper.make_graph(nodes, "slow", [x], [y], [w])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return real(bundle_dir, manifest, threads)

    real, runtime.open_sessions = runtime.open_sessions, slow_sessions
    tmp = Path(tempfile.mkdtemp())
    store = MemoryStore("frames")
    build_tiny_bundle(tmp / "bundle")
    version = publish_bundle(store, tmp / "bundle")
    keys = [f"incoming/{i}.jpg" for i in range(3)]
    for key in keys:
        etag = store.put(key, b"frame bytes")
        store.put_json("results/" + key[len("incoming/"):] + ".json",
                       {"status": "ok", "model": {"version": version}, "source": {"etag": etag}})
    settings = FunctionSettings(model_bucket="frames", model_cache_dir=str(tmp / "cache"))
    handler = make_handler(settings, stores=lambda bucket: store)
    answer = handler(s3_event("frames", keys), None)
    assert answer["records"]["skipped"] == 3, answer
    classifier = handler.__self__._classifier
    print("handled; loaded at return:", classifier._sessions.done(), flush=True)
    # atexit runs after the interpreter has joined its non-daemon threads, before it tears down.
    atexit.register(lambda: print("loaded at exit:", classifier._sessions.done(), flush=True))
""")


def test_exit_right_after_a_call_whose_records_were_all_skipped_is_clean() -> None:
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-c", CHILD], cwd=REPO, capture_output=True, text=True, timeout=120,
                              check=False)
        assert "terminate called" not in proc.stderr
        assert proc.returncode == 0, proc.stderr[-2000:]
        # The call returned while the model was still loading, and the exit waited for the load.
        assert proc.stdout.splitlines() == ["handled; loaded at return: False", "loaded at exit: True"]
