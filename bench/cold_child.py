"""One cold start, in a fresh process.  Run by ``bench.cold_start``; prints one JSON line.

``function`` mode (the runtime-only venv): import ``functions.classify`` and call its
module-level ``handler`` with an S3 event for one frame under ``incoming/``; the App
builds itself from the environment, fetches the bundle from (moto) S3 into
``MODEL_CACHE_DIR``, classifies the frame and writes its result.

``keras`` mode (the development venv): build the same backbone with Keras and the same
weights (``training.keras_backbone``), decode the same frame with ``decode_image``,
predict, and apply the LightGBM head from the bundle's ``head.txt``.

Only the standard library is imported before the clock starts.  Phases are wall-clock
``time.time()`` stamps, so the parent can relate them to the moment it spawned us.
"""

from __future__ import annotations

import json
import os
import sys
import time

T_MAIN = time.time()  # interpreter up, site imported, this module compiled


def _wrap(module: object, name: str, phases: dict[str, float], label: str) -> None:
    original = getattr(module, name)

    def timed(*args: object, **kwargs: object) -> object:
        t0 = time.time()
        try:
            return original(*args, **kwargs)
        finally:
            phases[label] = phases.get(label, 0.0) + (time.time() - t0)

    setattr(module, name, timed)


def _patch_session_options(variant: str) -> None:
    """Variants of ``shared.runtime.session_options`` measured against the shipped one."""
    import shared.runtime as rt

    original = rt.session_options
    if variant == "baseline":
        return
    import onnxruntime as ort

    def options(threads: int | None = None) -> object:
        opts = original(threads)
        level = variant.split(":", 1)[1]
        opts.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[level]
        return opts

    if variant.startswith("opt:"):
        rt.session_options = options
    elif variant.startswith("ort:"):
        from bench import ortvariants

        rt.session_options = ortvariants._options_factory(variant[4:], None)
    else:
        raise SystemExit(f"unknown variant {variant}")


def function_mode(key: str, variant: str) -> dict:
    phases: dict[str, float] = {}
    t0 = time.time()
    import functions.classify as fc

    t_import = time.time()
    import shared.bundle as sb
    import shared.runtime as rt

    _wrap(fc, "resolve_version", phases, "resolve_latest")
    _wrap(sb, "fetch_manifest", phases, "fetch_manifest")  # called by shared.bundle.load_pinned
    # These two run on the model-load thread, overlapping the frame's download and decode.
    _wrap(sb, "fetch_files", phases, "fetch_verify_files_bg")
    _wrap(rt, "open_sessions", phases, "onnx_sessions_bg")
    _wrap(fc, "client_store_factory", phases, "boto3_client")
    _wrap(rt.Classifier, "predict", phases, "predict_incl_wait")
    _patch_session_options(variant)
    t_patch = time.time()
    bucket = os.environ["BUCKET"]
    event = {"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
                          "eventName": "ObjectCreated:Put",
                          "s3": {"bucket": {"name": bucket}, "object": {"key": key}}}]}
    response = fc.handler(event, None)
    t_done = time.time()
    ok = response.get("records", {}).get("ok") == 1
    modules = sorted(m for m in ("tensorflow", "keras", "lightgbm", "sklearn", "scipy", "pandas", "av")
                     if m in sys.modules)
    import resource

    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"mode": "function", "ok": ok, "response": response, "t_main": T_MAIN, "t_start": t0,
            "t_import_done": t_import, "t_result": t_done, "import_s": t_import - t0,
            "handler_s": t_done - t_patch, "phases_s": phases, "heavy_modules_loaded": modules,
            "n_modules": len(sys.modules), "peak_rss_mb": peak_rss_mb}


def keras_mode(backbone: str, weights: str, frame_path: str, head_path: str) -> dict:
    t0 = time.time()
    import numpy as np

    from shared.backbones import get_backbone
    from shared.imaging import decode_image
    from training import head_input
    from training.keras_backbone import build_model, keras_home, resolve_weights

    spec = get_backbone(backbone)
    choice = resolve_weights(spec, weights, home=keras_home(os.environ), seed=42)
    t_import = time.time()
    # The head's input as training.fit's default makes it (the ImageNet groups when the weights have a top).
    kind = head_input.resolve("auto", choice.include_top)
    model = build_model(spec, choice, seed=42, head_input=kind)  # imports keras + TensorFlow
    t_model = time.time()
    import lightgbm

    head = lightgbm.Booster(model_file=head_path)
    t_head = time.time()
    with open(frame_path, "rb") as fh:
        image = decode_image(fh.read(), spec.input_size)
    out = model.predict_on_batch(image[None])
    features = np.asarray(out[0] if isinstance(out, (list, tuple)) else out)
    prob = float(np.ravel(head.predict(features))[0])
    t_done = time.time()
    return {"mode": "keras", "ok": features.shape[-1] == head.num_feature(), "probability": prob, "t_main": T_MAIN,
            "t_start": t0, "t_import_done": t_import, "t_result": t_done, "import_s": t_import - t0,
            "phases_s": {"build_model_incl_tf_import": t_model - t_import, "load_head": t_head - t_model,
                         "decode_predict_head": t_done - t_head}}


def main() -> None:
    mode = sys.argv[1]
    if mode == "function":
        out = function_mode(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "baseline")
    else:
        out = keras_mode(*sys.argv[2:6])
    sys.stdout.write("BENCH-RESULT " + json.dumps(out) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
