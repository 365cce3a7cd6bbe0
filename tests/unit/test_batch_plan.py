"""The batch driver's pure parts: cameras, key files, resume, slices, flags (no Spark, no S3)."""

from __future__ import annotations

import gzip
from datetime import datetime, timezone
from pathlib import Path

import pytest

from batch import plan
from batch.cli import config_from_args
from batch.plan import Item, KeyEntry as Listed
from functions.results import result_key_for
from shared.cameras import NO_CAMERA, CameraRule
from shared.config import FunctionSettings
from shared.errors import ConfigError

pytestmark = pytest.mark.batch  # pyspark, pandas, pyarrow: not in the function's runtime

ETAG = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(("key", "regex", "camera"), [
    ("incoming/cam1/2026/01.jpg", None, "cam1"),
    ("incoming/01.jpg", None, NO_CAMERA),
    ("incoming/site-7/cam-3/01.jpg", r"^([^/]+/[^/]+)/", "site-7/cam-3"),
    ("incoming/x_cam12_0001.jpg", r"cam\d+", "cam12"),
    ("incoming/nomatch.jpg", r"cam\d+", NO_CAMERA),
])
def test_items_take_their_camera_from_the_shared_rule(key: str, regex: str | None, camera: str) -> None:
    items, _ = plan.to_items([Listed(key, ETAG, 1)], CameraRule("incoming/", regex))
    assert items[0].camera == camera


def test_plain_key_list_skips_blanks_comments_and_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "keys.txt"
    path.write_text("# frames to re-score\nincoming/b.jpg\n\nincoming/a.jpg\nincoming/b.jpg\n")
    assert plan.read_keys_file(path, "bkt") == [Listed("incoming/a.jpg", None, None),
                                                Listed("incoming/b.jpg", None, None)]


def test_s3_inventory_csv_gz_is_url_decoded_and_other_buckets_left_out(tmp_path: Path) -> None:
    path = tmp_path / "inventory.csv.gz"
    rows = [f'"bkt","incoming/cam+1/a%C3%BC.jpg","1234","2026-11-30T10:00:00.000Z","{ETAG}"',
            f'"other","incoming/x.jpg","1","2026-11-30T10:00:00.000Z","{ETAG}"']
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(rows) + "\n")
    assert plan.read_keys_file(path, "bkt") == [Listed("incoming/cam 1/aü.jpg", ETAG, 1234)]


def test_csv_with_a_header_and_parquet_inventory(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    csv_path = tmp_path / "keys.csv"
    csv_path.write_text(f"key,etag,size\nincoming/a.jpg,{ETAG},10\n")
    assert plan.read_keys_file(csv_path, "bkt") == [Listed("incoming/a.jpg", ETAG, 10)]
    pq_path = tmp_path / "inventory.parquet"
    pq.write_table(pa.table({"bucket": ["bkt", "other"], "key": ["incoming/c d.jpg", "incoming/z.jpg"],
                             "size": [5, 6], "e_tag": [ETAG, ETAG]}), pq_path)
    assert plan.read_keys_file(pq_path, "bkt") == [Listed("incoming/c d.jpg", ETAG, 5)]
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"name": ["x"]}), bad)
    with pytest.raises(ConfigError, match="no 'key' column"):
        plan.read_keys_file(bad, "bkt")


def test_a_row_settles_a_frame_only_with_the_same_etag_and_a_final_status() -> None:
    ok = {"etag": ETAG, "status": "ok", "error_type": None}
    bad_input = {"etag": ETAG, "status": "error", "error_type": "TruncatedImageError"}
    storage = {"etag": ETAG, "status": "error", "error_type": "AccessDeniedError"}
    failed = {"etag": ETAG, "status": "failed", "error_type": "TransientStorageError"}
    assert plan.is_done(ok, ETAG) and plan.is_done(bad_input, ETAG)
    assert not plan.is_done(ok, "another-etag") and not plan.is_done(ok, None)
    assert not plan.is_done(storage, ETAG) and not plan.is_done(failed, ETAG)
    items = [Item("incoming/c/a.jpg", ETAG, 1, "c"), Item("incoming/c/b.jpg", ETAG, 1, "c"),
             Item("incoming/c/c.jpg", ETAG, 1, "c")]
    todo, done = plan.drop_done(items, {"incoming/c/a.jpg": ok, "incoming/c/b.jpg": failed})
    assert ([i.key for i in todo], done) == (["incoming/c/b.jpg", "incoming/c/c.jpg"], 1)


def test_slices_are_contiguous_and_sized_for_the_cluster() -> None:
    assert plan.slices(0, 100, 4) == 0
    assert plan.slices(3, 100, 4) == 3  # never an empty task
    assert plan.slices(100, 100, 4) == 4  # one per core, though 50-frame tasks would make 2
    assert plan.slices(1000, 2000, 2) == 8  # 4 waves on 2 cores, 125 frames each
    assert plan.slices(181, 2000, 2) == 4  # not below 50 frames a task
    assert plan.slices(24, 5, 2) == 5 and plan.slices(10_000_000, 2000, 64) == 5000  # the most per task rules
    items = [Item(f"k{i:02d}", None, None, "c") for i in range(10)]
    runs = plan.contiguous(items, 3)
    assert [len(r) for r in runs] == [4, 3, 3] and [i for r in runs for i in r] == items


def test_to_items_sorts_by_camera_and_leaves_out_keys_outside_the_prefix() -> None:
    listed = [Listed("incoming/b/1.jpg", ETAG, 1), Listed("incoming/a/2.jpg", ETAG, 1), Listed("other/x.jpg", ETAG, 1),
              Listed("incoming/a/", ETAG, 0)]
    items, outside = plan.to_items(listed, CameraRule("incoming/"))
    assert [(i.camera, i.key) for i in items] == [("a", "incoming/a/2.jpg"), ("b", "incoming/b/1.jpg")]
    assert outside == 2


def test_to_items_scopes_keys_with_the_functions_own_rule() -> None:
    settings = FunctionSettings(input_prefix="cams/", results_prefix="out/")
    listed = [Listed(k, ETAG, 1) for k in ("cams/a/1.jpg", "cams/a/", "incoming/a/1.jpg", "out/a/1.jpg.json")]
    items, outside = plan.to_items(listed, CameraRule("cams/"), settings)
    assert [i.key for i in items] == [k.key for k in listed if result_key_for(settings, k.key) is not None]
    assert [i.key for i in items] == ["cams/a/1.jpg"] and outside == 3


def test_window_by_last_modified() -> None:
    t = datetime(2026, 11, 30, 12, tzinfo=timezone.utc)
    since, until = datetime(2026, 11, 30, tzinfo=timezone.utc), datetime(2026, 12, 1, tzinfo=timezone.utc)
    assert plan._within(t, since, until) and not plan._within(until, since, until)
    assert plan._within(None, None, None) and not plan._within(None, since, None)


def test_flags_fall_back_to_the_environment_like_training_fit(tmp_path: Path) -> None:
    env = {"BUCKET": "bkt", "S3_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_REGION": "eu-west-1",
           "INPUT_PREFIX": "frames", "MAX_IMAGE_BYTES": "1000", "FUNCTION_ROLE": "frames"}
    cfg = config_from_args(["--since", "2026-11-01", "--camera-regex", "cam\\d+"], env)
    assert cfg.cameras.camera("frames/x_cam7_1.jpg") == "cam7"
    assert (cfg.bucket, cfg.s3.endpoint_url, cfg.s3.region) == ("bkt", "http://127.0.0.1:9", "eu-west-1")
    assert cfg.settings.input_prefix == "frames/" and cfg.settings.limits.max_bytes == 1000
    assert cfg.settings.role == "all"  # frames and clips alike, whatever the function's deployment split
    assert cfg.since == datetime(2026, 11, 1, tzinfo=timezone.utc) and cfg.model == "latest"
    assert cfg.results_table == "tables/results/" and cfg.settings.model_bucket == "bkt"
    with pytest.raises(ConfigError, match="--bucket"):
        config_from_args([], {})
    with pytest.raises(ConfigError, match="before --until"):
        config_from_args(["--since", "2026-12-02", "--until", "2026-12-01"], env)
    with pytest.raises(ConfigError, match="not a date"):
        config_from_args(["--since", "yesterday"], env)
    with pytest.raises(ConfigError, match="regular expression"):
        config_from_args(["--camera-regex", "("], env)
    keys = tmp_path / "k.txt"
    keys.write_text("incoming/a.jpg\n")
    with pytest.raises(ConfigError, match="either --keys"):
        config_from_args(["--keys", str(keys), "--since", "2026-11-01"], env)


def test_the_region_is_only_looked_up_on_aws_without_one() -> None:
    from batch.score import with_region

    local = config_from_args(["--bucket", "b", "--endpoint-url", "http://127.0.0.1:9"], {})
    assert with_region(local) is local
    pinned = config_from_args(["--bucket", "b", "--region", "eu-west-1"], {})
    assert with_region(pinned) is pinned


def test_a_cluster_master_gets_the_code_shipped_as_a_zip() -> None:
    import zipfile
    from types import SimpleNamespace

    from batch.score import ship_code

    shipped: list[str] = []
    ship_code(SimpleNamespace(sparkContext=SimpleNamespace(addPyFile=shipped.append)))
    with zipfile.ZipFile(shipped[0]) as zf:
        names = set(zf.namelist())
    assert {"batch/score.py", "batch/worker.py", "functions/service.py", "shared/bundle.py"} <= names
    assert "batch/log4j2-quiet.properties" in names and not any("__pycache__" in n for n in names)
