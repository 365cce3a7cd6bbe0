"""Video mode: classify the frames of a CCTV clip and draw the result back onto it.

* :mod:`functions.video.reading`: limits, opening and decoding with PyAV, sampling;
* :mod:`functions.video.pipeline`: batches through the classifier, annotation, :func:`process_video`;
* :mod:`functions.video.result`: the summary (segments, label shares) and the result document;
* :mod:`functions.video.__main__`: the command line, ``python -m functions.video``.

Nothing here is imported for a still frame: the service imports it when the first clip
arrives, and PyAV is imported inside functions, so even then FFmpeg loads only to decode.
"""
