"""functions.video and functions.annotate without video files: limits, sampling, the
summary, the shared preprocessing, the overlay, and the pipeline's memory bound."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
import weakref
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from functions.annotate import BOX, HOT, Overlay, bar_is_hot, draw_overlay, even_size, pad_to_even
from functions.events import is_video_key
from functions.video.__main__ import parse_s3_bundle
from functions.video.pipeline import Pipeline, Timer, run_frames
from functions.video.reading import (
    DecodedFrame,
    Sampler,
    SamplingPlan,
    VideoInfo,
    check_video_info,
    check_video_size,
    plan_sampling,
    video_workspace,
)
from functions.video.result import segments, summarise
from shared.config import VideoLimits
from shared.errors import (
    CCTVError,
    ConfigError,
    InvalidVideoError,
    NotAVideoError,
    VideoTooLargeError,
    VideoTooLongError,
    VideoTooManyFramesError,
)
from shared.imaging import decode_image, fit_to_input
from shared.runtime import Classifier
from tests.fakes import build_tiny_bundle
from tests.video_fakes import scene

REPO = Path(__file__).resolve().parents[2]


def info(**overrides: Any) -> VideoInfo:
    base = dict(container="mp4", codec="h264", width=640, height=480, fps=Fraction(30), duration_s=20.0,
                frames_declared=600, bytes=1_000_000)
    return VideoInfo(**{**base, **overrides})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Classifier:
    folder = tmp_path_factory.mktemp("tiny")
    build_tiny_bundle(folder)
    return Classifier.from_dir(folder)


# -- keys, limits, workspace -----------------------------------------------------------


@pytest.mark.parametrize("key", ["incoming/cam1/clip.mp4", "a.AVI", "x/y.MoV", "z.mkv", "deep/dir.v2/clip.Mp4"])
def test_video_keys(key: str) -> None:
    assert is_video_key(key)


@pytest.mark.parametrize("key", ["incoming/frame.jpg", "clip.mp4.json", "mp4", "incoming/.mp4", "folder.mp4/",
                                 "clip.webm", ""])
def test_not_video_keys(key: str) -> None:
    assert not is_video_key(key)


def test_limits_from_env() -> None:
    limits = VideoLimits.from_env({"MAX_VIDEO_BYTES": "1000", "MAX_VIDEO_SECONDS": "2.5", "MAX_VIDEO_FRAMES": "9",
                                   "VIDEO_SAMPLE_FPS": "0.5", "MAX_VIDEO_PIXELS": "64000",
                                   "MAX_VIDEO_DECODED_FRAMES": "500"})
    assert limits == VideoLimits(max_bytes=1000, max_duration_s=2.5, max_frames=9, sample_fps=0.5, max_pixels=64000,
                                 max_decoded_frames=500)
    assert limits.decoded_frames_limit == 500
    assert VideoLimits.from_env({}) == VideoLimits()
    assert VideoLimits().sample_fps is None  # every frame by default


def test_pixel_and_decoded_frame_defaults() -> None:
    assert VideoLimits().max_pixels == 3840 * 2160 == 8_294_400
    # Unset, the decoded-frame limit is the duration limit at 60 fps: 7,200 as deployed (120 s).
    assert VideoLimits(max_duration_s=120).decoded_frames_limit == 7_200
    assert VideoLimits().decoded_frames_limit == 36_000 and VideoLimits().max_decoded_frames is None
    assert VideoLimits(max_duration_s=0.001).decoded_frames_limit == 1
    assert VideoLimits(max_duration_s=120, max_decoded_frames=50).decoded_frames_limit == 50


@pytest.mark.parametrize(("env", "setting", "words"), [
    ({"MAX_VIDEO_FRAMES": "lots"}, "MAX_VIDEO_FRAMES", "whole number"),
    ({"VIDEO_SAMPLE_FPS": "fast"}, "VIDEO_SAMPLE_FPS", "a number"),
    ({"MAX_VIDEO_SECONDS": "0"}, "MAX_VIDEO_SECONDS", "positive"),
    ({"MAX_VIDEO_BYTES": "-5"}, "MAX_VIDEO_BYTES", "positive"),
    ({"MAX_VIDEO_PIXELS": "0"}, "MAX_VIDEO_PIXELS", "positive"),
    ({"MAX_VIDEO_PIXELS": "4K"}, "MAX_VIDEO_PIXELS", "whole number"),
    ({"MAX_VIDEO_DECODED_FRAMES": "-1"}, "MAX_VIDEO_DECODED_FRAMES", "positive"),
    ({"MAX_VIDEO_DECODED_FRAMES": "7.5"}, "MAX_VIDEO_DECODED_FRAMES", "whole number"),
])
def test_bad_limits_name_the_setting(env: dict[str, str], setting: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        VideoLimits.from_env(env)
    assert caught.value.context["setting"] == setting
    assert setting in str(caught.value) and words in str(caught.value)


def test_size_check_before_download() -> None:
    with pytest.raises(VideoTooLargeError, match=r"is 2,000 bytes, over the 1,000-byte limit.*MAX_VIDEO_BYTES"):
        check_video_size(2000, VideoLimits(max_bytes=1000), "incoming/cam1/clip.mp4")
    with pytest.raises(NotAVideoError, match="empty"):
        check_video_size(0, VideoLimits(), "incoming/cam1/clip.mp4")
    check_video_size(1000, VideoLimits(max_bytes=1000), "incoming/cam1/clip.mp4")


def test_video_errors_are_bad_input() -> None:
    assert issubclass(InvalidVideoError, CCTVError)
    assert not InvalidVideoError.retryable and InvalidVideoError.exit_code == 2
    assert issubclass(VideoTooManyFramesError, VideoTooLongError)


def test_too_many_frames_settles_the_clip() -> None:
    from functions.service import is_final  # the result is final: a redelivery is not processed again

    assert is_final({"status": "error", "error": {"type": "VideoTooManyFramesError"}})


@pytest.mark.parametrize(("width", "height"), [(8192, 8192), (4096, 2160), (3841, 2160)])
def test_frames_over_the_pixel_limit_are_refused_before_decoding(width: int, height: int) -> None:
    with pytest.raises(VideoTooLargeError) as caught:
        check_video_info(info(width=width, height=height), VideoLimits(), "incoming/cam1/clip.mp4")
    message = str(caught.value)
    assert f"'incoming/cam1/clip.mp4' has {width}x{height} = {width * height:,}-pixel frames" in message
    assert "over the 8,294,400-pixel limit" in message and message.endswith("raise MAX_VIDEO_PIXELS.")
    assert caught.value.context == {"key": "incoming/cam1/clip.mp4", "width": width, "height": height}


def test_4k_and_smaller_frames_pass() -> None:
    check_video_info(info(width=3840, height=2160), VideoLimits(), "clip.mp4")
    check_video_info(info(width=64, height=48), VideoLimits(max_pixels=64 * 48), "clip.mp4")
    with pytest.raises(VideoTooLargeError, match="64x48 = 3,072-pixel frames, over the 1,000-pixel limit"):
        check_video_info(info(width=64, height=48), VideoLimits(max_pixels=1000), "clip.mp4")


def test_too_many_declared_frames_are_refused_before_decoding() -> None:
    # 120 s at 240 fps passes the duration limit, but is 28,800 frames to decode and re-encode.
    fast = info(fps=Fraction(240), duration_s=120.0, frames_declared=28_800)
    with pytest.raises(VideoTooManyFramesError) as caught:
        check_video_info(fast, VideoLimits(max_duration_s=120), "incoming/cam1/fast.mp4")
    message = str(caught.value)
    assert message == ("'incoming/cam1/fast.mp4' has 28,800 frames, over the 7,200-frame limit; cut it into "
                       "shorter clips, lower its frame rate or raise MAX_VIDEO_DECODED_FRAMES.")
    assert caught.value.context == {"key": "incoming/cam1/fast.mp4", "frames": 28_800}
    check_video_info(info(fps=Fraction(60), duration_s=120.0, frames_declared=7_200),
                     VideoLimits(max_duration_s=120), "ok.mp4")


def test_frame_count_from_duration_when_none_is_declared() -> None:
    mkv = info(fps=Fraction(240), duration_s=60.0, frames_declared=None)
    with pytest.raises(VideoTooManyFramesError,
                       match=r"has 14,400 frames \(60\.0 s at 240 fps\), over the 10,000-frame limit"):
        check_video_info(mkv, VideoLimits(max_decoded_frames=10_000), "clip.mkv")
    check_video_info(info(frames_declared=None, duration_s=None), VideoLimits(max_decoded_frames=1), "clip.mkv")


def test_pixels_are_checked_before_duration_and_frames() -> None:
    huge = info(width=8192, height=8192, duration_s=9_999.0, frames_declared=999_999)
    with pytest.raises(VideoTooLargeError):
        check_video_info(huge, VideoLimits(max_duration_s=120), "clip.mp4")
    with pytest.raises(VideoTooLongError) as caught:  # duration before frames: the better-known limit
        check_video_info(info(width=64, height=48, duration_s=9_999.0, frames_declared=999_999),
                         VideoLimits(max_duration_s=120), "clip.mp4")
    assert type(caught.value) is VideoTooLongError


def test_workspace_names_are_generated_and_removed() -> None:
    with pytest.raises(RuntimeError):
        with video_workspace() as (clip, annotated):
            folder = clip.parent
            assert annotated.parent == folder and folder.name.startswith("cctv-video-")
            assert (clip.name, annotated.name) == ("input", "annotated.mp4")
            clip.write_bytes(b"x")
            annotated.write_bytes(b"y")
            raise RuntimeError("the handler failed half-way")
    assert not folder.exists()


@pytest.mark.parametrize(("spec", "expected"), [
    ("s3://models-bucket/models/", ("models-bucket", "models/", None)),
    ("s3://models-bucket/models/v3", ("models-bucket", "models/", "v3")),
    ("s3://models-bucket/team/models/v3", ("models-bucket", "team/models/", "v3")),
    ("s3://models-bucket", ("models-bucket", "models/", None)),
    ("s3://models-bucket/", ("models-bucket", "models/", None)),
])
def test_parse_s3_bundle(spec: str, expected: tuple[str, str, str | None]) -> None:
    assert parse_s3_bundle(spec) == expected


def test_parse_s3_bundle_needs_a_bucket() -> None:
    with pytest.raises(ConfigError, match="names no bucket"):
        parse_s3_bundle("s3:///models/")


# -- preprocessing is the stills' ----------------------------------------------------------


@pytest.mark.parametrize("size", [(32, 32), (224, 224), (160, 120), (96, 128)])
def test_frames_are_preprocessed_like_stills(size: tuple[int, int]) -> None:
    frame = scene("car", 7, (320, 240))
    png = io.BytesIO()
    frame.save(png, "PNG")
    still = decode_image(png.getvalue(), size)
    video = fit_to_input(frame, size)
    assert video.dtype == np.uint8 and video.shape == (size[1], size[0], 3)
    assert np.array_equal(video, still)


# -- sampling ------------------------------------------------------------------------------


def test_every_frame_when_under_the_cap() -> None:
    assert plan_sampling(info(), VideoLimits()) == SamplingPlan(None, 1500, None)


def test_long_clips_are_sampled_evenly_within_the_cap() -> None:
    plan = plan_sampling(info(duration_s=600.0, frames_declared=18_000), VideoLimits(max_frames=1500))
    assert plan.fps == pytest.approx(2.5)


def test_sample_fps_is_honoured_and_capped() -> None:
    assert plan_sampling(info(), VideoLimits(sample_fps=2)).fps == 2
    assert plan_sampling(info(), VideoLimits(sample_fps=60)).fps is None  # above the source rate: every frame
    assert plan_sampling(info(duration_s=600.0), VideoLimits(sample_fps=5, max_frames=1500)).fps == pytest.approx(2.5)


@pytest.mark.parametrize(("fps", "expected"), [(2.0, 4), (1.0, 2), (0.4, 1), (None, 60)])
def test_sampler_takes_one_frame_per_slot(fps: float | None, expected: int) -> None:
    sampler = Sampler(SamplingPlan(fps, 1500, fps))
    taken = [i for i in range(60) if sampler.take(i / 30)]  # 2 s at 30 fps
    assert len(taken) == expected and taken[0] == 0
    if fps:
        assert taken == [round(k * 30 / fps) for k in range(expected)]


def test_sampler_cap_is_a_safety_net() -> None:
    sampler = Sampler(SamplingPlan(None, 5, None))
    assert sum(sampler.take(i / 30) for i in range(20)) == 5
    assert sampler.refused_by_cap == 15


# -- segments and summary ------------------------------------------------------------------


def records(labels: str, step: int = 1, fps: float = 10.0) -> list[dict[str, Any]]:
    names = {"b": "bus", "c": "car"}
    return [{"frame": i * step, "time_s": i * step / fps, "label": names[ch], "probability": 0.9,
             "positive_probability": None, "imagenet_top": None} for i, ch in enumerate(labels)]


def test_segments_tile_the_clip() -> None:
    runs = segments(records("bbcccb", step=5), end_frame=30, end_s=3.0)
    assert [(r["label"], r["start_frame"], r["end_frame"], r["frames"], r["sampled"]) for r in runs] == [
        ("bus", 0, 9, 10, 2), ("car", 10, 24, 15, 3), ("bus", 25, 29, 5, 1)]
    assert [(r["start_s"], r["end_s"]) for r in runs] == [(0.0, 1.0), (1.0, 2.5), (2.5, 3.0)]


def test_summary_shares_and_longest_runs() -> None:
    summary = summarise(records("bbcccbbbbc"), ["bus", "car"], end_frame=10, end_s=1.0, imagenet_sums={})
    assert summary["label_share"] == {"bus": 0.6, "car": 0.4}
    assert summary["dominant_label"] == "bus"
    assert [(r["start_frame"], r["frames"]) for r in summary["longest"]["bus"]] == [(5, 4), (0, 2)]
    assert [(r["start_frame"], r["frames"]) for r in summary["longest"]["car"]] == [(2, 3), (9, 1)]
    assert summary["imagenet_top"] is None


def test_summary_lists_every_class_even_when_unseen() -> None:
    summary = summarise(records("bbb"), ["bus", "car", "empty"], end_frame=3, end_s=0.3,
                        imagenet_sums={"school bus": 2.4, "tabby": 0.3})
    assert summary["label_share"] == {"bus": 1.0, "car": 0.0, "empty": 0.0}
    assert summary["longest"]["empty"] == []
    assert summary["imagenet_top"] == [{"class": "school bus", "mean_probability": 0.8},
                                       {"class": "tabby", "mean_probability": 0.1}]


def test_the_phases_process_video_times_are_the_ones_the_clip_result_keeps() -> None:
    from functions.results import VIDEO_PHASES
    from functions.video import result

    ticks = iter(range(100))
    timer = Timer(lambda: float(next(ticks)))
    for phase in ("decode", "inference", "encode", "something-else"):
        with timer(phase):
            pass
    assert list(result.timings_ms(timer, 5.0)) == [*VIDEO_PHASES, "total"]  # one list, in functions/results.py
    assert not hasattr(result, "PHASES")


# -- overlay -------------------------------------------------------------------------------


@pytest.mark.parametrize(("height", "font"), [(120, 12), (240, 13), (360, 20), (480, 27), (1080, 60)])
def test_font_grows_with_the_frame(height: int, font: int) -> None:
    assert Overlay.for_height(height).font.size == font


@pytest.mark.parametrize("size", [(160, 120), (320, 240), (640, 360), (1920, 1080)])
def test_overlay_is_drawn_readably_and_stays_small(size: tuple[int, int]) -> None:
    grey = (128, 128, 128)
    img = Image.new("RGB", size, grey)
    draw_overlay(img, Overlay.for_height(size[1], size[0]), label="car", probability=0.87, bar_value=0.87,
                 bar_name="car", threshold=0.5)
    arr = np.asarray(img)
    changed = np.argwhere((arr != grey).any(axis=2))
    (top, left), (bottom, right) = changed.min(axis=0), changed.max(axis=0)
    assert top > 0 and left > 0  # a margin from the edge
    assert right < size[0] * 0.6 and bottom < size[1] * 0.35, "the badge must not hide the scene"
    badge = arr[top:bottom + 1, left:right + 1]
    assert (badge == BOX).all(axis=2).mean() > 0.3  # a dark box behind the text
    assert (badge > 240).all(axis=2).sum() > 20  # white text on it
    assert (np.abs(badge.astype(int) - HOT).sum(axis=2) < 30).sum() > 10  # above threshold: the hot bar


@pytest.mark.parametrize(("value", "threshold", "hot"), [
    (0.42, 0.42, True), (0.4199, 0.42, False), (0.3, 0.25, True),  # the head's threshold, inclusive
    (0.5, None, True), (0.49, None, False),  # no threshold: even odds
    (None, 0.5, False)])
def test_the_bar_is_hot_where_the_labelling_rule_says(value: float | None, threshold: float | None,
                                                     hot: bool) -> None:
    from shared.decision import decide

    assert bar_is_hot(value, threshold) is hot
    if value is not None and threshold is not None:  # the same answer as the function's label
        assert (decide(np.array([1 - value, value]), ["bus", "car"], "car", threshold) == 1) is hot


def test_even_dimensions_for_yuv420p() -> None:
    assert even_size(161, 121) == (162, 122) and even_size(160, 120) == (160, 120)
    padded = pad_to_even(Image.new("RGB", (161, 121), (200, 0, 0)))
    assert padded.size == (162, 122) and padded.getpixel((160, 120)) == (200, 0, 0)
    assert padded.getpixel((161, 121)) == BOX


# -- the pipeline streams ------------------------------------------------------------------


class Tally:
    """Counts frames alive at once: accumulation would show as a large maximum."""

    def __init__(self) -> None:
        self.alive = 0
        self.max_alive = 0
        self.made = 0

    def born(self, obj: object) -> None:
        self.alive += 1
        self.made += 1
        self.max_alive = max(self.max_alive, self.alive)
        weakref.finalize(obj, self._died)

    def _died(self) -> None:
        self.alive -= 1


class RecordingWriter:
    """Stands in for AnnotatedWriter: checks order and keeps only what it was told."""

    def __init__(self) -> None:
        self.labels: list[str] = []

    def write(self, image: Image.Image, *, label: str, probability: float, bar_value: float | None) -> None:
        assert image.size == (320, 240)
        self.labels.append(label)


def traced_image(pixels: np.ndarray) -> Image.Image:
    """Pillow's buffers are invisible to tracemalloc; keep the (traced) numpy pixels alive as
    long as the image, so any frame still held shows up in the traced peak."""
    img = Image.fromarray(pixels)
    img.info["pixels"] = pixels
    return img


def frame_stream(n: int, tally: Tally, size: tuple[int, int] = (320, 240)) -> Iterator[DecodedFrame]:
    """``n`` frames at 30 fps, buses then cars; each holds its own copy of the pixels, as decoding would."""
    looks = {label: np.asarray(scene(label, 0, size)) for label in ("bus", "car")}
    for i in range(n):
        pixels = looks["bus" if i < n // 2 else "car"].copy()
        item = DecodedFrame(i, i / 30, pixels, traced_image)
        tally.born(item)
        yield item


@pytest.mark.parametrize("sample_fps", [None, 3.0])
def test_pipeline_holds_a_bounded_number_of_frames(tiny: Classifier, sample_fps: float | None) -> None:
    import tracemalloc

    tally, writer = Tally(), RecordingWriter()
    plan = SamplingPlan(sample_fps, 1500, sample_fps)
    pipeline = Pipeline(tiny, Sampler(plan), Timer(lambda: 0.0), writer=writer, batch_size=16, max_pending=24)
    frames = frame_stream(600, tally)
    assert iter(frames) is frames  # a generator: nothing is decoded ahead
    tracemalloc.start()
    try:
        run_frames(frames, pipeline, pipeline.timer)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert tally.made == 600 and len(writer.labels) == 600
    assert tally.max_alive <= 24 + 2, f"{tally.max_alive} frames were alive at once"
    # 600 frames of 320x240 RGB are 138 MB; the pipeline holds a couple of dozen.
    assert peak < 30 * 1024 * 1024, f"peak traced memory {peak / 2**20:.1f} MiB"
    assert writer.labels[:300] == ["bus"] * 300 and writer.labels[300:] == ["car"] * 300
    expected = 600 if sample_fps is None else 60
    assert len(pipeline.records) == expected


def test_pipeline_bounds_waiting_frames_by_their_real_size(tiny: Classifier) -> None:
    # A header can declare small frames (max_pending is sized from it) and the stream carry
    # large ones; the bytes the waiting frames really hold are bounded too.
    tally, writer = Tally(), RecordingWriter()
    size = 320 * 240 * 9 // 2
    pipeline = Pipeline(tiny, Sampler(SamplingPlan(None, 1500, None)), Timer(lambda: 0.0), writer=writer,
                        batch_size=16, max_pending=64, max_pending_bytes=4 * size)
    sizes = []

    def frames() -> Iterator[DecodedFrame]:
        for item in frame_stream(60, tally):
            item.nbytes = size
            sizes.append(len(pipeline._pending))
            yield item

    run_frames(frames(), pipeline, pipeline.timer)
    assert len(writer.labels) == 60 and max(sizes) <= 3
    assert tally.max_alive <= 4 + 2, f"{tally.max_alive} frames were alive at once"


def test_unsampled_frames_show_the_latest_sampled_label(tiny: Classifier) -> None:
    tally, writer = Tally(), RecordingWriter()
    pipeline = Pipeline(tiny, Sampler(SamplingPlan(1.0, 1500, 1.0)), Timer(lambda: 0.0), writer=writer,
                        max_pending=7)
    run_frames(frame_stream(90, tally), pipeline, pipeline.timer)  # 3 s at 30 fps, split at frame 45
    assert [r["frame"] for r in pipeline.records] == [0, 30, 60]
    assert [r["label"] for r in pipeline.records] == ["bus", "bus", "car"]
    # Frames 45-59 are cars but are shown as the frame-30 prediction until frame 60 is sampled.
    assert writer.labels == ["bus"] * 60 + ["car"] * 30


# -- cold start ------------------------------------------------------------------------------


def test_import_pulls_in_no_ffmpeg_and_no_training_stack() -> None:
    code = textwrap.dedent("""
        import sys
        import functions.video.pipeline, functions.video.__main__, functions.annotate
        heavy = ("av", "onnxruntime", "tensorflow", "keras", "lightgbm", "sklearn", "scipy")
        print(",".join(m for m in heavy if m in sys.modules))
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
