"""Video mode end to end: real clips written with PyAV, a real tiny ONNX bundle, real
decoding and H.264 encoding, the command line, and the kit's real CCTV clips."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from functions.video.__main__ import main
from functions.video.pipeline import process_video
from functions.video.reading import FrameReader, open_video
from shared.config import VideoLimits
from shared.errors import (
    EmptyVideoError,
    InvalidVideoError,
    NotAVideoError,
    NoTimeLeftError,
    NoVideoStreamError,
    UnsupportedCodecError,
    VideoTooLargeError,
    VideoTooLongError,
    VideoTooManyFramesError,
)
from shared.runtime import Classifier
from shared.storage import ObjectStore
from tests import video_fakes as vf
from tests.fakes import build_tiny_bundle, publish_bundle

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts" / "video"
KIT_CLIPS = {"yashbansal24_traffic.mp4": (640, 360, 734), "yashbansal24_video.avi": (320, 240, 750),
             "BorislavY_traffic.mp4": (640, 480, 909)}


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-bundle")
    build_tiny_bundle(folder, with_top=True)
    return folder


@pytest.fixture(scope="module")
def tiny(bundle_dir: Path) -> Classifier:
    return Classifier.from_dir(bundle_dir)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("clips")


@pytest.fixture(scope="module")
def switch_mp4(clips: Path) -> Path:
    """4 s at 10 fps: a bus for 2 s, then a car."""
    return vf.write_clip(clips / "switch.mp4", vf.labels_switching())


def decode_all(path: Path, keep: set[int] | None = None) -> tuple[dict[str, Any], list[np.ndarray]]:
    """What the clip declares, and its frames as RGB (only those in ``keep`` when given;
    ``meta["frames"]`` counts them all)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        meta: dict[str, Any] = {"codec": stream.codec_context.name, "width": stream.width, "height": stream.height,
                "fps": stream.average_rate, "pix_fmt": stream.codec_context.pix_fmt}
        n_frames = 0
        frames = []
        for i, frame in enumerate(container.decode(stream)):
            n_frames += 1
            if keep is None or i in keep:
                frames.append(frame.to_ndarray(format="rgb24"))
    meta["frames"] = n_frames
    return meta, frames


def assert_sentence(message: str) -> None:
    assert message.endswith("."), message
    assert "\n" not in message


# -- the timeline finds what is in the clip ------------------------------------------------


def test_every_frame_timeline_finds_the_switch(tiny: Classifier, switch_mp4: Path) -> None:
    result = process_video(switch_mp4, tiny)
    frames, summary = result["frames"], result["summary"]
    assert [f["frame"] for f in frames] == list(range(40))
    assert [f["label"] for f in frames] == ["bus"] * 20 + ["car"] * 20
    runs = summary["segments"]
    assert [r["label"] for r in runs] == ["bus", "car"]
    assert abs(runs[1]["start_frame"] - 20) <= 1 and runs[1]["start_s"] == pytest.approx(2.0, abs=0.1)
    assert (runs[0]["start_s"], runs[1]["end_s"]) == (0.0, pytest.approx(4.0))
    assert runs[0]["frames"] + runs[1]["frames"] == 40
    assert summary["label_share"] == {"bus": 0.5, "car": 0.5}
    assert summary["longest"]["car"][0]["frames"] == 20
    assert all(f["positive_probability"] > 0.9 for f in frames[20:])
    assert all(f["probability"] > 0.9 and f["positive_probability"] < 0.1 for f in frames[:20])
    assert summary["imagenet_top"][0]["class"] in {"sports car", "school bus"}
    assert len(frames[0]["imagenet_top"]) == 3
    assert result["model"] == {"version": "tiny-v1", "backbone": "tiny_mean_rgb", "classes": ["bus", "car"],
                               "positive_class": "car", "threshold": 0.5}
    video = result["video"]
    assert (video["codec"], video["width"], video["height"], video["fps"]) == ("h264", 160, 120, 10.0)
    assert (video["frames_declared"], video["frames_decoded"], video["frames_sampled"]) == (40, 40, 40)
    assert video["duration_s"] == pytest.approx(4.0)
    assert result["partial"] is None and result["annotated"] is None
    assert set(result["timings_ms"]) == {"decode", "inference", "encode", "total"}
    assert set(result["throughput"]) == {"frames_per_s", "sampled_frames_per_s"}
    json.dumps(result)  # the handler stores it as is


def test_sampled_timeline_finds_the_switch(tiny: Classifier, switch_mp4: Path) -> None:
    result = process_video(switch_mp4, tiny, limits=VideoLimits(sample_fps=2))
    frames = result["frames"]
    assert [f["frame"] for f in frames] == [0, 5, 10, 15, 20, 25, 30, 35]
    runs = result["summary"]["segments"]
    assert [r["label"] for r in runs] == ["bus", "car"]
    assert abs(runs[1]["start_s"] - 2.0) <= 0.5  # within one sampled frame of the truth
    assert result["sampling"]["mode"] == "fps" and result["video"]["frames_decoded"] == 40


def test_max_frames_spreads_over_the_whole_clip(tiny: Classifier, switch_mp4: Path) -> None:
    result = process_video(switch_mp4, tiny, limits=VideoLimits(max_frames=8))
    times = [f["time_s"] for f in result["frames"]]
    assert len(times) == 8 and times[-1] >= 3.0  # not just the first 8 frames
    assert [r["label"] for r in result["summary"]["segments"]] == ["bus", "car"]


@pytest.mark.parametrize("suffix", [".avi", ".mkv", ".mov"])
def test_other_containers(tiny: Classifier, clips: Path, suffix: str) -> None:
    clip = vf.write_clip(clips / f"switch{suffix}", vf.labels_switching())
    result = process_video(clip, tiny)
    assert result["video"]["frames_decoded"] == 40
    assert [r["label"] for r in result["summary"]["segments"]] == ["bus", "car"]
    assert abs(result["summary"]["segments"][1]["start_frame"] - 20) <= 1


# -- the annotated clip -----------------------------------------------------------------------


def hot_pixels(frame: np.ndarray) -> int:
    """Orange bar pixels (the positive class above threshold) in the top-left corner."""
    corner = frame[: frame.shape[0] // 3, : frame.shape[1] * 2 // 3].astype(int)
    return int(((corner[..., 0] > 200) & (corner[..., 1] > 90) & (corner[..., 1] < 190)
                & (corner[..., 2] < 90)).sum())


def test_annotated_mp4_matches_the_source(tiny: Classifier, switch_mp4: Path, tmp_path: Path) -> None:
    out = tmp_path / "annotated.mp4"
    result = process_video(switch_mp4, tiny, out_path=out)
    meta, frames = decode_all(out)
    source, _ = decode_all(switch_mp4)
    assert (meta["codec"], meta["pix_fmt"]) == ("h264", "yuv420p")
    assert (meta["width"], meta["height"], meta["fps"]) == (source["width"], source["height"], source["fps"])
    assert len(frames) == 40 == result["annotated"]["frames"]
    assert result["annotated"] == {"codec": "h264", "pixel_format": "yuv420p", "width": 160, "height": 120,
                                   "fps": 10.0, "frames": 40}
    assert max(hot_pixels(f) for f in frames[:20]) == 0  # bus: the bar stays below threshold
    assert min(hot_pixels(f) for f in frames[20:]) > 20  # car: an orange bar
    data = out.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat"), "the index comes first, so browsers can start playing"


def test_odd_sized_source_is_padded_to_even(tiny: Classifier, clips: Path, tmp_path: Path) -> None:
    clip = vf.write_frames(clips / "odd.avi", [vf.scene("car", i, (161, 121)) for i in range(10)], codec="png",
                           pix_fmt="rgb24")
    result = process_video(clip, tiny, out_path=tmp_path / "odd.mp4")
    meta, frames = decode_all(tmp_path / "odd.mp4")
    assert (meta["width"], meta["height"], len(frames)) == (162, 122, 10)
    assert result["video"]["width"] == 161 and result["summary"]["label_share"]["car"] == 1.0


# -- bad input ------------------------------------------------------------------------------


BAD: dict[str, tuple[Callable[[Path], Path], type[InvalidVideoError], tuple[str, ...]]] = {
    "garbage": (lambda d: vf.garbage(d / "garbage.mp4"), NotAVideoError,
                ("could not be opened as a video", "Upload the complete clip")),
    "text renamed .mp4": (lambda d: vf.text_as_mp4(d / "report.mp4"), NotAVideoError,
                          ("could not be opened as a video", "not a video")),
    "empty file": (lambda d: (d / "empty.mp4", (d / "empty.mp4").write_bytes(b""))[0], NotAVideoError,
                   ("is empty (0 bytes)", "upload the clip again")),
    "audio only": (lambda d: vf.audio_only(d / "memo.mp4"), NoVideoStreamError,
                   ("has no video stream (audio)", "upload a camera clip")),
    "unknown codec": (lambda d: vf.unknown_codec_avi(d / "odd-codec.avi"), UnsupportedCodecError,
                      ("cannot decode", "re-encode it as H.264")),
    "zero frames": (lambda d: vf.zero_frame_avi(d / "zero.avi"), EmptyVideoError,
                    ("has no video frames that could be decoded", "Upload the complete clip")),
    "cut before the first frame": (lambda d: vf.cut_after_index(vf.write_clip(d / "c.mp4", ["bus"] * 20),
                                                                d / "cut.mp4"), EmptyVideoError,
                                   ("no video frames", "cut short")),
    "mp4 cut before its index": (lambda d: vf.truncate(vf.write_clip(d / "slow.mp4", ["bus"] * 20, faststart=False),
                                                       d / "cut-slow.mp4"), NotAVideoError,
                                 ("could not be opened", "cut short", "loses its index")),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_refused_with_a_clear_error(tiny: Classifier, tmp_path: Path, case: str) -> None:
    make, error, phrases = BAD[case]
    clip = make(tmp_path)
    out = tmp_path / "out" / "annotated.mp4"
    out.parent.mkdir()
    with pytest.raises(error) as caught:
        process_video(clip, tiny, out_path=out, name=f"incoming/cam1/{clip.name}")
    message = str(caught.value)
    assert f"'incoming/cam1/{clip.name}'" in message and caught.value.context["key"] == f"incoming/cam1/{clip.name}"
    for phrase in phrases:
        assert phrase in message
    assert_sentence(message)
    assert not out.exists(), "no half-written annotated clip is left behind"
    assert caught.value.to_dict()["type"] == error.__name__


def test_too_long_and_too_large(tiny: Classifier, switch_mp4: Path, tmp_path: Path) -> None:
    with pytest.raises(VideoTooLongError, match=r"lasts 4\.0 s, over the 2-second limit.*MAX_VIDEO_SECONDS"):
        process_video(switch_mp4, tiny, limits=VideoLimits(max_duration_s=2))
    size = switch_mp4.stat().st_size
    with pytest.raises(VideoTooLargeError, match=rf"is {size:,} bytes, over the 1,000-byte limit.*MAX_VIDEO_BYTES"):
        process_video(switch_mp4, tiny, limits=VideoLimits(max_bytes=1000), out_path=tmp_path / "x.mp4")
    assert not (tmp_path / "x.mp4").exists()


def test_frames_over_the_pixel_limit_are_refused_before_decoding(tiny: Classifier, clips: Path,
                                                                tmp_path: Path) -> None:
    # Just over the 3840x2160 default: the real header is read, no frame is decoded.
    clip = vf.flat_clip(clips / "dci.mp4", (4096, 2304))
    out = tmp_path / "annotated.mp4"
    with pytest.raises(VideoTooLargeError) as caught:
        process_video(clip, tiny, out_path=out, name="incoming/cam1/dci.mp4")
    message = str(caught.value)
    assert message.startswith("'incoming/cam1/dci.mp4' has 4096x2304 = 9,437,184-pixel frames, over the "
                              "8,294,400-pixel limit; scale it down")
    assert "MAX_VIDEO_PIXELS" in message
    assert_sentence(message)
    assert caught.value.context == {"key": "incoming/cam1/dci.mp4", "width": 4096, "height": 2304}
    assert not out.exists()


def test_pixel_limit_on_a_small_clip(tiny: Classifier, switch_mp4: Path, tmp_path: Path) -> None:
    with pytest.raises(VideoTooLargeError, match=r"has 160x120 = 19,200-pixel frames, over the 1,000-pixel limit.*"
                                                 r"MAX_VIDEO_PIXELS"):
        process_video(switch_mp4, tiny, limits=VideoLimits(max_pixels=1000), out_path=tmp_path / "x.mp4")
    assert not (tmp_path / "x.mp4").exists()
    result = process_video(switch_mp4, tiny, limits=VideoLimits(max_pixels=160 * 120))
    assert result["video"]["frames_decoded"] == 40


@pytest.mark.parametrize(("suffix", "declared"), [(".mp4", "has 40 frames, over"),
                                                  (".mkv", r"has 40 frames \(4\.0 s at 10 fps\), over")])
def test_too_many_frames_are_refused_before_decoding(tiny: Classifier, clips: Path, tmp_path: Path, suffix: str,
                                                     declared: str) -> None:
    # MP4 declares its frame count; MKV only a duration, so the count is duration x fps.
    clip = vf.write_clip(clips / f"forty{suffix}", vf.labels_switching())
    with pytest.raises(VideoTooManyFramesError,
                       match=rf"{declared} the 10-frame limit; .*raise MAX_VIDEO_DECODED_FRAMES\.$") as caught:
        process_video(clip, tiny, limits=VideoLimits(max_decoded_frames=10), out_path=tmp_path / "x.mp4")
    assert caught.value.context["frames"] == 40 and caught.value.to_dict()["type"] == "VideoTooManyFramesError"
    assert not (tmp_path / "x.mp4").exists()
    assert process_video(clip, tiny, limits=VideoLimits(max_decoded_frames=40))["video"]["frames_decoded"] == 40


def test_a_header_that_understates_the_frame_count_is_caught_while_decoding(switch_mp4: Path) -> None:
    # Stands in for a clip whose header declares fewer frames than it holds.
    with open_video(switch_mp4, "clip.mp4", switch_mp4.stat().st_size) as (container, stream, info):
        assert info.frames_declared == 40
        reader = FrameReader(container, stream, info, max_duration_s=600.0, name="clip.mp4", max_frames=10)
        with pytest.raises(VideoTooManyFramesError, match=r"'clip\.mp4' holds more than 10 frames, the "
                                                          r"decoded-frame limit;.*MAX_VIDEO_DECODED_FRAMES\.$"):
            for _ in reader:
                pass
    assert reader.decoded == 10


def test_a_header_that_understates_the_frame_size_is_caught_while_decoding(switch_mp4: Path) -> None:
    with open_video(switch_mp4, "clip.mp4", switch_mp4.stat().st_size) as (container, stream, info):
        reader = FrameReader(container, stream, info, max_duration_s=600.0, name="clip.mp4", max_pixels=1000)
        with pytest.raises(VideoTooLargeError, match=r"has 160x120 = 19,200-pixel frames from frame 0, over the "
                                                     r"1,000-pixel limit.*MAX_VIDEO_PIXELS"):
            next(iter(reader))
        frames = list(FrameReader(container, stream, info, max_duration_s=600.0, name="clip.mp4",
                                  max_pixels=160 * 120))
    assert [f.nbytes for f in frames[:2]] == [160 * 120 * 9 // 2] * 2


class FailingClassifier:
    """Fails on its third batch, after the annotated clip has been started."""

    def __init__(self, inner: Classifier) -> None:
        self.inner, self.manifest, self.calls = inner, inner.manifest, 0

    @property
    def input_size(self) -> tuple[int, int]:
        return self.inner.input_size

    def predict(self, images: np.ndarray, *, top_k: int = 3) -> list[Any]:
        self.calls += 1
        if self.calls == 3:
            raise RuntimeError("onnxruntime ran out of memory")
        return self.inner.predict(images, top_k=top_k)


def test_a_failure_half_way_leaves_no_annotated_clip(tiny: Classifier, switch_mp4: Path, tmp_path: Path) -> None:
    out = tmp_path / "annotated.mp4"
    with pytest.raises(RuntimeError, match="out of memory"):
        process_video(switch_mp4, FailingClassifier(tiny), out_path=out, batch_size=8)
    assert not out.exists()


def test_a_file_it_did_not_write_is_left_alone(tiny: Classifier, tmp_path: Path) -> None:
    out = tmp_path / "annotated.mp4"
    out.write_bytes(b"an earlier result")
    with pytest.raises(EmptyVideoError):
        process_video(vf.zero_frame_avi(tmp_path / "zero.avi"), tiny, out_path=out)
    assert out.read_bytes() == b"an earlier result"


def test_a_header_that_understates_the_length_is_caught_while_decoding(switch_mp4: Path) -> None:
    # Stands in for a clip with no duration in its header: the check runs on every frame too.
    with open_video(switch_mp4, "clip.mp4", switch_mp4.stat().st_size) as (container, stream, info):
        reader = FrameReader(container, stream, info, max_duration_s=1.0, name="clip.mp4")
        with pytest.raises(VideoTooLongError, match="runs past 1 s"):
            for _ in reader:
                pass
    assert reader.decoded == 11  # frames at 0.0 .. 1.0 s passed


@pytest.mark.parametrize(("suffix", "fraction"), [(".mp4", 0.5), (".mov", 0.5), (".mkv", 0.5), (".avi", 0.6)])
def test_truncated_clip_gives_the_frames_before_the_cut(tiny: Classifier, clips: Path, tmp_path: Path,
                                                        suffix: str, fraction: float) -> None:
    whole = vf.write_clip(clips / f"long{suffix}", vf.labels_switching(6.0), size=(320, 240))
    cut = vf.truncate(whole, tmp_path / f"cut{suffix}", fraction)
    result = process_video(cut, tiny, out_path=tmp_path / "annotated.mp4")
    partial = result["partial"]
    stopped = partial["stopped_at_frame"]
    assert 5 <= stopped < 55, partial
    assert result["video"]["frames_decoded"] == stopped == result["annotated"]["frames"]
    assert [f["frame"] for f in result["frames"]] == list(range(stopped))
    assert "cut short" in partial["reason"] and "Upload the complete clip" in partial["reason"]
    assert partial["stopped_at_s"] == pytest.approx((stopped - 1) / 10)
    assert result["summary"]["segments"][-1]["end_frame"] == stopped - 1
    assert len(decode_all(tmp_path / "annotated.mp4")[1]) == stopped


@pytest.mark.kit
def test_kit_mp4_cut_in_half_stops_where_the_data_ends(tiny: Classifier, kit: Path, tmp_path: Path) -> None:
    clip = kit / "data" / "video" / "yashbansal24_traffic.mp4"
    if not clip.is_file():
        pytest.skip(f"{clip} is absent")
    result = process_video(vf.truncate(clip, tmp_path / "half.mp4"), tiny)
    partial = result["partial"]
    assert partial["stopped_at_frame"] == 325 and partial["frames_declared"] == 734
    assert "325 of the 734 frames" in partial["reason"] and "cut short" in partial["reason"]


# -- memory ---------------------------------------------------------------------------------


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class RssProbe:
    """Wraps the classifier and samples resident memory at every batch."""

    def __init__(self, inner: Classifier) -> None:
        self.inner, self.manifest = inner, inner.manifest
        self.samples: list[int] = []

    @property
    def input_size(self) -> tuple[int, int]:
        return self.inner.input_size

    def predict(self, images: np.ndarray, *, top_k: int = 3) -> list[Any]:
        self.samples.append(rss_bytes())
        return self.inner.predict(images, top_k=top_k)


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc (Linux)")
def test_a_long_clip_is_streamed_not_accumulated(tiny: Classifier, clips: Path, tmp_path: Path) -> None:
    clip = vf.write_long_clip(clips / "long-600.mp4", 600)  # 20 s of 320x240 at 30 fps
    probe = RssProbe(tiny)
    tracemalloc.start()
    try:
        result = process_video(clip, probe, out_path=tmp_path / "annotated.mp4")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result["video"]["frames_decoded"] == 600 == result["annotated"]["frames"]
    assert [r["label"] for r in result["summary"]["segments"]] == ["bus", "car"]
    # Holding every frame would take 600 x (115 KB decoded + 230 KB RGB) = 207 MB.
    growth = max(probe.samples) - probe.samples[0]
    assert growth < 60 * 2**20, f"resident memory grew by {growth / 2**20:.0f} MiB while streaming"
    assert peak < 16 * 2**20, f"peak traced memory {peak / 2**20:.1f} MiB"
    assert len(probe.samples) >= 600 // 16  # batches of at most 16, not one batch at the end


# -- real CCTV clips from the kit --------------------------------------------------------------


@pytest.mark.kit
@pytest.mark.slow
@pytest.mark.parametrize("name", list(KIT_CLIPS))
def test_kit_clips_end_to_end(tiny: Classifier, kit: Path, tmp_path: Path, name: str,
                              capsys: pytest.CaptureFixture[str]) -> None:
    clip = kit / "data" / "video" / name
    if not clip.is_file():
        pytest.skip(f"{clip} is absent")
    width, height, count = KIT_CLIPS[name]
    out = tmp_path / "annotated.mp4"
    result = process_video(clip, tiny, out_path=out)
    video, timings, rate = result["video"], result["timings_ms"], result["throughput"]
    assert (video["width"], video["height"], video["frames_decoded"], video["frames_sampled"]) == \
        (width, height, count, count)
    assert result["partial"] is None and len(result["frames"]) == count
    assert sum(result["summary"]["label_share"].values()) == pytest.approx(1.0, abs=1e-3)
    assert sum(r["frames"] for r in result["summary"]["segments"]) == count
    meta, frames = decode_all(out, keep={count // 2})
    assert (meta["codec"], meta["width"], meta["height"], meta["frames"]) == ("h264", width, height, count)
    assert float(meta["fps"]) == pytest.approx(video["fps"], abs=1e-3)
    if name == "yashbansal24_traffic.mp4":
        from PIL import Image

        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        Image.fromarray(frames[0]).save(ARTIFACTS / "annotated_frame.png")
    with capsys.disabled():
        print(f"\n  {name}: {count} frames {width}x{height} in {timings['total'] / 1000:.2f} s = "
              f"{rate['frames_per_s']} frames/s (decode {timings['decode'] / 1000:.2f}, inference "
              f"{timings['inference'] / 1000:.2f}, encode {timings['encode'] / 1000:.2f})")


# -- command line ---------------------------------------------------------------------------


def run_cli(argv: list[str], env: dict[str, str] | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(argv, env=env if env is not None else {}, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_cli_with_a_local_bundle(bundle_dir: Path, switch_mp4: Path, tmp_path: Path) -> None:
    out, result_json = tmp_path / "annotated.mp4", tmp_path / "result.json"
    code, stdout, stderr = run_cli([str(switch_mp4), "--bundle", str(bundle_dir), "--out", str(out),
                                    "--json", str(result_json), "--sample-fps", "5"])
    assert (code, stderr) == (0, "")
    assert "bus" in stdout and "50.0% of classified frames" in stdout and "frames/s" in stdout
    assert "2 segment(s)" in stdout and str(out) in stdout
    result = json.loads(result_json.read_text())
    assert result["video"]["frames_sampled"] == 20 and result["sampling"]["fps"] == 5
    assert len(decode_all(out)[1]) == 40


def test_cli_max_frames_and_env_limits(bundle_dir: Path, switch_mp4: Path, tmp_path: Path) -> None:
    result_json = tmp_path / "r.json"
    code, _, _ = run_cli([str(switch_mp4), "--bundle", str(bundle_dir), "--max-frames", "4", "--json",
                          str(result_json)])
    assert code == 0 and json.loads(result_json.read_text())["video"]["frames_sampled"] == 4
    code, _, stderr = run_cli([str(switch_mp4), "--bundle", str(bundle_dir)], env={"MAX_VIDEO_SECONDS": "1"})
    assert code == 2 and "MAX_VIDEO_SECONDS" in stderr
    for setting in ("MAX_VIDEO_PIXELS", "MAX_VIDEO_DECODED_FRAMES"):
        code, _, stderr = run_cli([str(switch_mp4), "--bundle", str(bundle_dir)], env={setting: "10"})
        assert code == 2 and setting in stderr and stderr.count("\n") == 1


@pytest.mark.parametrize("spec", ["s3://{bucket}/models/", "s3://{bucket}/models/tiny-v1"])
def test_cli_with_a_bundle_in_s3(bundle_dir: Path, switch_mp4: Path, store: ObjectStore, s3_settings: Any,
                                 spec: str) -> None:
    publish_bundle(store, bundle_dir)
    env = {**os.environ, "S3_ENDPOINT_URL": s3_settings.endpoint_url, "AWS_REGION": "us-east-1"}
    code, stdout, stderr = run_cli([str(switch_mp4), "--bundle", spec.format(bucket=store.bucket)], env=env)
    assert (code, stderr) == (0, "")
    assert "model tiny-v1" in stdout


def test_cli_errors_are_one_line(bundle_dir: Path, clips: Path, tmp_path: Path) -> None:
    bad = vf.text_as_mp4(tmp_path / "report.mp4")
    code, stdout, stderr = run_cli([str(bad), "--bundle", str(bundle_dir)])
    assert code == 2 and stdout == ""
    assert stderr.count("\n") == 1 and stderr.startswith("error: ") and "could not be opened as a video" in stderr
    code, _, stderr = run_cli([str(bad), "--bundle", str(bundle_dir), "--out", str(tmp_path / "x.avi")])
    assert code == 2 and "must end in .mp4" in stderr
    code, _, stderr = run_cli([str(bad), "--bundle", str(tmp_path / "no-such-bundle")])
    assert code == 3 and "No manifest.json" in stderr
    code, _, stderr = run_cli([str(tmp_path / "missing.mp4"), "--bundle", str(bundle_dir)])
    assert code == 2 and "does not exist; check the path" in stderr
    with pytest.raises(SystemExit) as usage:
        run_cli([str(bad), "--max-frames", "0"])
    assert usage.value.code == 2


def test_cli_module_entry_point_without_traceback(bundle_dir: Path, tmp_path: Path) -> None:
    bad = vf.audio_only(tmp_path / "memo.mp4")
    proc = subprocess.run([sys.executable, "-m", "functions.video", str(bad), "--bundle", str(bundle_dir)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
    assert "has no video stream" in proc.stderr


# -- diagnosis: damaged is not cut short; out of time is said ---------------------------------------


def _corrupt_middle(src: Path, dst: Path, share: float = 0.1, seed: int = 5) -> Path:
    """Same length as ``src``, with a run of random bytes in the middle of its data."""
    data = bytearray(src.read_bytes())
    rng = np.random.default_rng(seed)
    start, length = len(data) // 2, int(len(data) * share)
    data[start:start + length] = rng.integers(0, 256, length, dtype=np.uint8).tobytes()
    dst.write_bytes(bytes(data))
    return dst


# Not .mkv: its demuxer skips a corrupt cluster without a word, so the lost frames leave no trace
# but a gap in the timestamps (which variable-rate cameras leave too).
@pytest.mark.parametrize("suffix", [".mp4", ".mov"])
def test_a_corrupt_clip_is_called_damaged_not_cut_short(tiny: Classifier, clips: Path, tmp_path: Path,
                                                       suffix: str) -> None:
    whole = vf.write_clip(clips / f"whole{suffix}", vf.labels_switching(6.0), size=(320, 240))
    bad = _corrupt_middle(whole, tmp_path / f"corrupt{suffix}")
    try:
        result = process_video(bad, tiny, out_path=tmp_path / "annotated.mp4")
    except EmptyVideoError as exc:  # nothing decoded at all: the message must still say damaged
        message = str(exc)
    else:
        partial = result["partial"]
        assert partial is not None and partial["cause"] == "damaged", partial
        assert result["video"]["bad_packets"] > 0
        message = partial["reason"]
    assert "damaged" in message and "not cut short" in message and "probably cut short" not in message


def test_a_truncated_clip_is_still_called_cut_short(tiny: Classifier, clips: Path, tmp_path: Path) -> None:
    whole = vf.write_clip(clips / "whole-trunc.mp4", vf.labels_switching(6.0), size=(320, 240))
    result = process_video(vf.truncate(whole, tmp_path / "cut.mp4", 0.5), tiny)
    assert result["partial"]["cause"] == "cut_short" and "cut short" in result["partial"]["reason"]


def test_decoding_stops_at_the_deadline_and_the_result_says_why(tiny: Classifier, clips: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    whole = vf.write_clip(clips / "whole-time.mp4", vf.labels_switching(6.0), size=(320, 240))
    ticks = iter(range(10_000))
    # A clock that moves one second per reading: the deadline 20 "seconds" away passes part-way.
    monkeypatch.setattr(time, "monotonic", lambda: float(next(ticks)))
    result = process_video(whole, tiny, out_path=tmp_path / "annotated.mp4", deadline=20.0)
    partial = result["partial"]
    assert partial["cause"] == "time" and "timeout" in partial["reason"], partial
    assert 0 < partial["stopped_at_frame"] < 60 and result["video"]["frames_decoded"] == partial["stopped_at_frame"]
    assert len(decode_all(tmp_path / "annotated.mp4")[1]) == partial["stopped_at_frame"]


def test_a_deadline_passed_before_the_first_frame_is_retried_not_settled(tiny: Classifier, clips: Path,
                                                                        tmp_path: Path) -> None:
    import time

    from functions.results import is_final

    whole = vf.write_clip(clips / "whole-late.mp4", vf.labels_switching(1.0), size=(320, 240))
    with pytest.raises(NoTimeLeftError) as info:  # not EmptyVideoError, which would settle the clip
        process_video(whole, tiny, out_path=tmp_path / "annotated.mp4", deadline=time.monotonic() - 1)
    assert info.value.retryable and "ran out before the first frame" in info.value.message
    assert not is_final({"status": "error", "error": {"type": info.value.kind}})
    assert not (tmp_path / "annotated.mp4").exists()  # the half-made mp4 is removed
