"""The service's reliability rules, against a store that behaves as S3 does (tests/memory_store.py):

* every input gets a result whatever its key: keys near S3's 1,024-byte limit fall back to
  ``results/_long/<sha256>.json``, and the result names its source key;
* racing deliveries of one input write its result once (conditional writes);
* a replacement (another model) is written only over the result that was read;
* a lost write is settled by the stored result: skipped only if it answers this delivery,
  written afresh if it was deleted, otherwise retried (a delivery of older bytes or an older
  model must not have the last word); a losing clip delivery leaves the winner's mp4 alone;
* the frames of a batch share a decode budget, and a frame that cannot fit gets an error
  result while the rest go on;
* FUNCTION_ROLE splits frames and clips between two functions;
* clips are not started (nor downloaded) when the invocation has no time left.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from functions import clips
from functions.classify import make_handler
from functions.events import ObjectRef
from functions.service import ClassifyService, Status, annotated_key_for, is_final, result_key_for
from shared.config import FunctionSettings
from shared.errors import (
    ImageTooLargeForMemoryError,
    ImageTooLargeToDecodeError,
    NoTimeLeftError,
    ResultConflictError,
)
from shared.runtime import Classifier
from shared.storage import MAX_KEY_BYTES
from tests.fakes import build_tiny_bundle, publish_bundle, s3_event
from tests.memory_store import MemoryStore
from tests.unit.test_service import CLIP_BYTES, RED, FakeProcessVideo, frame

NOW = datetime(2024, 6, 1, 10, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Classifier:
    folder = tmp_path_factory.mktemp("tiny")
    build_tiny_bundle(folder)
    return Classifier.from_dir(folder)


@pytest.fixture()
def store() -> MemoryStore:
    return MemoryStore("frames")  # refuses keys over 1,024 bytes, as S3 does


def service(store: MemoryStore, classifier: Classifier, **settings: Any) -> ClassifyService:
    return ClassifyService(FunctionSettings(**settings), lambda bucket: store, classifier, lambda: NOW)


def long_key(length: int, suffix: str = ".jpg") -> str:
    head = "incoming/cam7/"
    key = head + "k" * (length - len(head) - len(suffix)) + suffix
    assert len(key.encode()) == length
    return key


# -- every key gets a result -------------------------------------------------------------------


@pytest.mark.parametrize("length", [1000, 1019, 1020, 1021, 1024])
def test_every_key_up_to_s3s_limit_gets_its_result(store: MemoryStore, tiny: Classifier, length: int) -> None:
    key = long_key(length)
    store.put(key, frame(RED))
    [outcome] = service(store, tiny).run([ObjectRef(store.bucket, key)])
    assert outcome.status is Status.OK, outcome.error
    assert outcome.result_key is not None and len(outcome.result_key.encode()) <= MAX_KEY_BYTES
    if length > 1020:  # results/<rest>.json is 4 bytes longer than incoming/<rest>
        assert outcome.result_key == f"results/_long/{hashlib.sha256(key.encode()).hexdigest()}.json"
    else:
        assert outcome.result_key == "results/" + key.removeprefix("incoming/") + ".json"
    result = store.get_json(outcome.result_key)
    assert result["source"]["key"] == key and result["label"] == "car"
    # A repeated delivery finds it there and skips.
    [again] = service(store, tiny).run([ObjectRef(store.bucket, key)])
    assert again.status is Status.SKIPPED and store.writes[outcome.result_key] == 1


def test_a_long_clip_key_gets_both_its_results_at_fallback_keys(store: MemoryStore, tiny: Classifier,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clips, "process_video", FakeProcessVideo())
    key = long_key(1024, ".mp4")
    store.put(key, CLIP_BYTES)
    [outcome] = service(store, tiny).run([ObjectRef(store.bucket, key)])
    digest = hashlib.sha256(key.encode()).hexdigest()
    assert outcome.status is Status.OK, outcome.error
    assert outcome.result_key == f"results/_long/{digest}.json"
    assert store.get_json(outcome.result_key)["annotated_key"] == f"results/_long/{digest}.annotated.mp4"
    assert f"results/_long/{digest}.annotated.mp4" in store.objects
    assert annotated_key_for(FunctionSettings(), key) == f"results/_long/{digest}.annotated.mp4"
    assert result_key_for(FunctionSettings(), key) == outcome.result_key


# -- racing deliveries write once ----------------------------------------------------------------


class RacingStore(MemoryStore):
    """Holds the first HEAD of a result key of each of ``parties`` deliveries until all have made
    it, so all see the same state; later HEADs (a loser's second look) pass straight through."""

    def __init__(self, parties: int) -> None:
        super().__init__("frames")
        self.barrier = threading.Barrier(parties, timeout=10)
        self.held = 0

    def head(self, key: str) -> Any:
        info = super().head(key)
        if key.startswith("results/"):
            with self._lock:
                self.held += 1
                hold = self.held <= self.barrier.parties
            if hold:
                self.barrier.wait()
        return info


def _race(store: MemoryStore, classifier: Classifier, key: str, parties: int = 2) -> list[Status]:
    statuses: list[Status] = []

    def deliver() -> None:
        [outcome] = service(store, classifier).run([ObjectRef(store.bucket, key)])
        statuses.append(outcome.status)

    threads = [threading.Thread(target=deliver) for _ in range(parties)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(statuses, key=lambda s: s.value)


def test_two_racing_deliveries_write_the_result_once(tiny: Classifier) -> None:
    store = RacingStore(parties=2)
    store.put("incoming/race.jpg", frame(RED))
    assert _race(store, tiny, "incoming/race.jpg") == [Status.OK, Status.SKIPPED]
    assert store.writes["results/race.jpg.json"] == 1
    assert store.get_json("results/race.jpg.json")["label"] == "car"


def test_a_result_deleted_between_the_head_and_the_read_is_written_afresh(tiny: Classifier) -> None:
    class Vanishing(MemoryStore):
        vanished = False

        def get(self, key: str, *, max_bytes: int | None = None) -> Any:
            if key.startswith("results/") and not self.vanished:
                self.vanished = bool(self.objects.pop(key, None))  # deleted between the HEAD and the GET
            return super().get(key, max_bytes=max_bytes)

    store = Vanishing("frames")
    store.put("incoming/v.jpg", frame(RED))
    store.put("results/v.jpg.json", b'{"status": "ok", "model": {"version": "old"}}')
    [outcome] = service(store, tiny).run([ObjectRef(store.bucket, "incoming/v.jpg")])
    assert outcome.status is Status.OK and store.get_json("results/v.jpg.json")["label"] == "car"


def test_a_new_model_replaces_the_result_once_even_when_deliveries_race(tiny: Classifier) -> None:
    store = RacingStore(parties=3)
    store.put("incoming/old.jpg", frame(RED))
    store.objects["results/old.jpg.json"] = b'{"status": "ok", "model": {"version": "an-older-model"}}'
    assert _race(store, tiny, "incoming/old.jpg", parties=3) == [Status.OK, Status.SKIPPED, Status.SKIPPED]
    assert store.writes["results/old.jpg.json"] == 1  # one replacement, guarded by the ETag read
    assert store.get_json("results/old.jpg.json")["model"]["version"] == tiny.manifest.version


class LosingStore(MemoryStore):
    """Runs ``meanwhile(self)`` once, just before the first conditional write of a result: what a
    racing delivery (or someone deleting the result) does between this delivery's read and write."""

    def __init__(self, meanwhile: Any) -> None:
        super().__init__("frames")
        self.meanwhile = meanwhile

    def put(self, key: str, body: bytes, **kwargs: Any) -> str:
        if key.startswith("results/") and self.meanwhile is not None:
            meanwhile, self.meanwhile = self.meanwhile, None
            meanwhile(self)
        return super().put(key, body, **kwargs)


def test_a_result_deleted_between_the_read_and_the_replacement_is_written_afresh(tiny: Classifier) -> None:
    store = LosingStore(lambda s: s.objects.pop("results/d.jpg.json"))  # the If-Match then meets a 404
    store.put("incoming/d.jpg", frame(RED))
    store.objects["results/d.jpg.json"] = b'{"status": "ok", "model": {"version": "an-older-model"}}'
    [outcome] = service(store, tiny).run([ObjectRef(store.bucket, "incoming/d.jpg")])
    assert outcome.status is Status.OK, (outcome.reason, outcome.error)
    result = store.get_json("results/d.jpg.json")
    assert result["label"] == "car" and result["model"]["version"] == tiny.manifest.version


@pytest.mark.parametrize("winner", [
    {"source": {"etag": "etag-of-older-bytes"}},  # a delivery of the input's previous bytes
    {"source": None, "model": {"version": "an-older-model"}},  # a container still on the older model
])
def test_a_race_lost_to_a_result_for_other_bytes_or_model_is_retried_then_replaced(
        tiny: Classifier, winner: dict[str, Any]) -> None:
    def other_delivery_wins(s: MemoryStore) -> None:
        etag = s.head("incoming/w.jpg")
        assert etag is not None
        doc = {"status": "ok", "model": {"version": tiny.manifest.version}, "source": {"etag": etag.etag}}
        doc.update({k: v for k, v in winner.items() if v is not None})
        s.put("results/w.jpg.json", json.dumps(doc).encode(), if_none_match=True)

    store = LosingStore(other_delivery_wins)
    store.put("incoming/w.jpg", frame(RED))
    [outcome] = service(store, tiny).run([ObjectRef(store.bucket, "incoming/w.jpg")])
    assert outcome.status is Status.FAILED and outcome.needs_retry
    assert isinstance(outcome.error, ResultConflictError) and outcome.error.retryable
    assert store.writes["results/w.jpg.json"] == 1  # the other delivery's result, left as it was
    # The redelivery reads that result, sees it answers other bytes (or model) and replaces it.
    [again] = service(store, tiny).run([ObjectRef(store.bucket, "incoming/w.jpg")])
    assert again.status is Status.OK
    result = store.get_json("results/w.jpg.json")
    input_info = store.head("incoming/w.jpg")
    assert input_info is not None and result["source"]["etag"] == input_info.etag
    assert result["model"]["version"] == tiny.manifest.version and result["label"] == "car"


def test_a_race_lost_to_a_result_that_answers_this_delivery_is_skipped(tiny: Classifier) -> None:
    def same_delivery_wins(s: MemoryStore) -> None:
        info = s.head("incoming/same.jpg")
        assert info is not None
        s.put("results/same.jpg.json", json.dumps({"status": "ok", "label": "winner", "source": {"etag": info.etag},
                                                   "model": {"version": tiny.manifest.version}}).encode())

    store = LosingStore(same_delivery_wins)
    store.put("incoming/same.jpg", frame(RED))
    [outcome] = service(store, tiny).run([ObjectRef(store.bucket, "incoming/same.jpg")])
    assert outcome.status is Status.SKIPPED and outcome.result is not None and outcome.result["label"] == "winner"
    assert store.writes["results/same.jpg.json"] == 1


# -- the decode budget -------------------------------------------------------------------------


def test_a_frame_too_large_for_the_decode_budget_gets_an_error_and_the_batch_goes_on(
        store: MemoryStore, tiny: Classifier) -> None:
    import io

    big = io.BytesIO()
    Image.new("RGBA", (3000, 3000), (200, 10, 10, 255)).save(big, "PNG", compress_level=1)
    store.put("incoming/big.png", big.getvalue())
    store.put("incoming/small.jpg", frame(RED))
    runner = service(store, tiny, memory_mb=100)  # a 25 MiB budget: the small frame fits, the big one never
    assert runner.frames.budget.capacity == 25 * 1024 * 1024
    big_outcome, small_outcome = runner.run([ObjectRef(store.bucket, "incoming/big.png"),
                                             ObjectRef(store.bucket, "incoming/small.jpg")])
    assert small_outcome.status is Status.OK
    assert big_outcome.status is Status.ERROR
    error = store.get_json("results/big.png.json")["error"]
    # Its own class (a subclass of ImageTooLargeToDecodeError): the refusal is about the memory, not the frame.
    assert error["type"] == "ImageTooLargeForMemoryError" and "FUNCTION_MEMORY_MB" in error["message"]
    assert runner.frames.budget.used == 0


def test_a_frame_refused_for_the_decode_budget_is_decoded_once_the_memory_is_raised(
        store: MemoryStore, tiny: Classifier) -> None:
    import io

    big = io.BytesIO()
    Image.new("RGBA", (3000, 3000), (200, 10, 10, 255)).save(big, "PNG", compress_level=1)
    store.put("incoming/big.png", big.getvalue())
    [refused] = service(store, tiny, memory_mb=100).run([ObjectRef(store.bucket, "incoming/big.png")])
    assert refused.status is Status.ERROR and refused.result is not None and not is_final(refused.result)
    # The same bytes again, now with the memory: decoded, and the refusal is replaced.
    [again] = service(store, tiny, memory_mb=2048).run([ObjectRef(store.bucket, "incoming/big.png")])
    assert again.status is Status.OK and store.get_json("results/big.png.json")["label"] == "car"
    # A refusal over MAX_DECODE_MB is about the frame itself (like the pixel limit): it stays final.
    assert is_final({"status": "error", "error": {"type": "ImageTooLargeToDecodeError"}})
    assert not ImageTooLargeForMemoryError.settles_input and ImageTooLargeToDecodeError.settles_input


# -- two functions: frames and clips -------------------------------------------------------------


def test_function_roles_split_frames_and_clips(store: MemoryStore, tiny: Classifier,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeProcessVideo()
    monkeypatch.setattr(clips, "process_video", fake)
    store.put("incoming/a.jpg", frame(RED))
    store.put("incoming/b.MP4", CLIP_BYTES)
    refs = [ObjectRef(store.bucket, "incoming/a.jpg"), ObjectRef(store.bucket, "incoming/b.MP4")]
    frame_out, clip_out = service(store, tiny, role="frames").run(refs)
    assert frame_out.status is Status.OK and clip_out.status is Status.IGNORED
    assert clip_out.reason is not None and "clip function" in clip_out.reason and not fake.calls
    frame_out, clip_out = service(store, tiny, role="clips").run(refs)
    assert frame_out.status is Status.IGNORED and clip_out.status is Status.OK and len(fake.calls) == 1


def test_the_frame_function_does_not_load_the_model_for_an_event_of_clips(tmp_path: Path) -> None:
    store = MemoryStore("frames")
    loads: list[int] = []

    def loader(_: Any) -> Classifier:
        loads.append(1)
        raise AssertionError("the model must not load")

    handler = make_handler(FunctionSettings(role="frames"), stores=lambda bucket: store, loader=loader)
    answer = handler(s3_event("frames", ["incoming/x.mp4", "incoming/y.MKV"]), None)
    assert answer["records"]["ignored"] == 2 and not loads


# -- clips and the time left ----------------------------------------------------------------------


class Context:
    def __init__(self, remaining_ms: int) -> None:
        self.remaining_ms = remaining_ms
        self.aws_request_id = "req-1"

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def test_the_handler_passes_the_time_left_down_to_the_clip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeProcessVideo()
    monkeypatch.setattr(clips, "process_video", fake)
    store = MemoryStore("frames")
    build_tiny_bundle(tmp_path / "bundle")
    publish_bundle(store, tmp_path / "bundle")
    store.put("incoming/c.mp4", CLIP_BYTES)
    handler = make_handler(FunctionSettings(model_bucket="frames", model_cache_dir=str(tmp_path / "cache")),
                           stores=lambda bucket: store)
    before = time.monotonic()
    handler(s3_event("frames", ["incoming/c.mp4"]), Context(200_000))
    deadline = fake.calls[0]["deadline"]
    # 200 s left: decoding must stop 20 s (10%) before the end, to write the result.
    assert before + 175 < deadline < time.monotonic() + 181


def test_a_clip_with_no_time_left_is_retried_not_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeProcessVideo()
    monkeypatch.setattr(clips, "process_video", fake)
    store = MemoryStore("frames")
    build_tiny_bundle(tmp_path / "bundle")
    publish_bundle(store, tmp_path / "bundle")
    store.put("incoming/c.mp4", CLIP_BYTES)
    handler = make_handler(FunctionSettings(model_bucket="frames", model_cache_dir=str(tmp_path / "cache")),
                           stores=lambda bucket: store)
    with pytest.raises(NoTimeLeftError):  # raised, so the platform redelivers the event
        handler(s3_event("frames", ["incoming/c.mp4"]), Context(1500))
    assert not fake.calls and "results/c.mp4.json" not in store.objects


@pytest.mark.parametrize("late_by_s", [0.0, 5.0])
def test_a_clip_out_of_time_is_not_downloaded(store: MemoryStore, tiny: Classifier,
                                              monkeypatch: pytest.MonkeyPatch, late_by_s: float) -> None:
    fake = FakeProcessVideo()
    monkeypatch.setattr(clips, "process_video", fake)
    monkeypatch.setattr(clips, "decoding_deadline", lambda deadline: deadline)  # no share kept for writing
    store.put("incoming/late.mp4", CLIP_BYTES)
    outcome = service(store, tiny).clips.run(ObjectRef(store.bucket, "incoming/late.mp4"),
                                             deadline=time.monotonic() - late_by_s)
    assert outcome.status is Status.FAILED and isinstance(outcome.error, NoTimeLeftError)
    assert "to download" in outcome.error.message
    assert store.downloads == [] and not fake.calls and "results/late.mp4.json" not in store.objects


# -- the annotated mp4 of racing clip deliveries --------------------------------------------------


class ClipRaceStore(MemoryStore):
    """Runs ``meanwhile(self)`` once, as this delivery finishes processing (its annotated mp4 is
    made, not yet uploaded): what another delivery of the clip does in the meantime."""

    def __init__(self, meanwhile: Any) -> None:
        super().__init__("frames")
        self.meanwhile = meanwhile
        self.result_heads = 0

    def head(self, key: str) -> Any:
        if key.endswith(".json"):
            self.result_heads += 1  # the first is the skip check's, the second comes just before the upload
            if self.result_heads == 2 and self.meanwhile is not None:
                meanwhile, self.meanwhile = self.meanwhile, None
                meanwhile(self)
        return super().head(key)


def other_delivery(model: str, *, json_too: bool, etag: str | None = None) -> Any:
    """Another delivery's writes: its mp4 and (``json_too``) its result, for ``etag`` (the
    input's current ETag when None) and ``model``."""

    def write(s: MemoryStore) -> None:
        info = s.head("incoming/r.mp4")
        assert info is not None
        s.put("results/r.mp4.annotated.mp4", b"the other delivery's mp4", content_type="video/mp4")
        if json_too:
            doc = {"status": "ok", "kind": "video", "annotated_key": "results/r.mp4.annotated.mp4",
                   "model": {"version": model}, "source": {"etag": etag or info.etag}}
            s.put("results/r.mp4.json", json.dumps(doc).encode(), if_none_match=True)
    return write


def run_clip_race(tiny: Classifier, monkeypatch: pytest.MonkeyPatch, meanwhile: Any) -> tuple[ClipRaceStore, Any]:
    monkeypatch.setattr(clips, "process_video", FakeProcessVideo())
    store = ClipRaceStore(meanwhile)
    store.put("incoming/r.mp4", CLIP_BYTES)
    [outcome] = service(store, tiny).run([ObjectRef(store.bucket, "incoming/r.mp4")])
    assert store.meanwhile is None  # the other delivery did run in between
    return store, outcome


@pytest.mark.parametrize("etag, model", [("etag-of-older-bytes", None), (None, "an-older-model")],
                         ids=["older-bytes", "older-model"])
def test_a_clip_delivery_that_lost_the_race_leaves_the_winners_mp4(
        tiny: Classifier, monkeypatch: pytest.MonkeyPatch, etag: str | None, model: str | None) -> None:
    winner = other_delivery(model or tiny.manifest.version, json_too=True, etag=etag)
    store, outcome = run_clip_race(tiny, monkeypatch, winner)
    assert outcome.status is Status.FAILED and isinstance(outcome.error, ResultConflictError)
    assert store.objects["results/r.mp4.annotated.mp4"] == b"the other delivery's mp4"
    assert store.writes["results/r.mp4.annotated.mp4"] == 1 and store.writes["results/r.mp4.json"] == 1


def test_a_clip_delivery_whose_twin_won_is_skipped_without_uploading(tiny: Classifier,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    store, outcome = run_clip_race(tiny, monkeypatch, other_delivery(tiny.manifest.version, json_too=True))
    assert outcome.status is Status.SKIPPED and outcome.result is not None
    assert store.writes["results/r.mp4.annotated.mp4"] == 1  # the twin's upload only


def test_an_mp4_uploaded_meanwhile_is_not_overwritten_and_no_json_is_written(
        tiny: Classifier, monkeypatch: pytest.MonkeyPatch) -> None:
    twin = other_delivery(tiny.manifest.version, json_too=False)  # its mp4 is up, its JSON on the way
    store, outcome = run_clip_race(tiny, monkeypatch, twin)
    assert outcome.status is Status.FAILED and isinstance(outcome.error, ResultConflictError)
    assert "r.mp4.annotated.mp4 was uploaded meanwhile" in outcome.error.message
    assert store.objects["results/r.mp4.annotated.mp4"] == b"the other delivery's mp4"
    assert "results/r.mp4.json" not in store.objects
