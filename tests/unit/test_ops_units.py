"""Pure parts of ops: the camera rule (shared with batch scoring), durations, terminal cells,
the summary's percentiles and low-confidence rule, the report's chart bins and escaping."""

from __future__ import annotations

import dataclasses
import re
from datetime import datetime, timedelta, timezone

import pytest

from ops.records import Record, parse_duration
from ops.report import bin_width, label_share_over_time, render
from ops.summary import low_confidence, percentile
from ops.text import cell, table
from shared.cameras import NO_CAMERA, CameraRule, camera_of
from shared.clock import parse_time
from shared.errors import ConfigError

pytestmark = pytest.mark.ops
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.mark.parametrize(("key", "regex", "camera"), [
    ("incoming/cam1/0001.jpg", None, "cam1"),
    ("incoming/site 4/gate/0001.jpg", None, "site 4"),
    ("incoming/0001.jpg", None, NO_CAMERA),
    ("elsewhere/camX/1.jpg", None, "elsewhere"),
    ("incoming/2026/01/cam-7_0001.jpg", r"cam-(\d+)_", "7"),
    ("incoming/2026/01/cam-7_0001.jpg", r"cam-\d+", "cam-7"),
    ("incoming/2026/01/x.jpg", r"cam-(\d+)_", NO_CAMERA),
])
def test_camera_rule(key: str, regex: str | None, camera: str) -> None:
    assert CameraRule("incoming", regex).camera(key) == camera
    assert camera_of(key, "/incoming/", regex) == camera
    assert camera_of(key, "incoming/", re.compile(regex) if regex else None) == camera


def test_bad_camera_regex_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not a valid regular expression"):
        CameraRule("incoming/", "cam(")


def test_durations_and_times() -> None:
    assert parse_duration("90s") == timedelta(seconds=90) and parse_duration("24h") == timedelta(days=1)
    assert parse_duration(" 1.5d ") == timedelta(hours=36)
    with pytest.raises(ValueError):
        parse_duration("soon")
    assert parse_time("2026-01-01T00:00:00.000Z") == T0
    assert parse_time("2026-01-01T00:00:00") == T0 and parse_time("yesterday") is None


def test_cells_escape_terminal_control_characters() -> None:
    assert cell("a\x1b[2Jb\nc") == "a\\x1b[2Jb\\nc"
    assert cell("x" * 100).endswith("…") and len(cell("x" * 100)) == 70
    assert table([["a", 1.0]], ["k", "v"]).splitlines() == ["k  v", "-  -----", "a  1.000"]


def rec(key: str, label: str | None = "car", p: float | None = 0.9, status: str = "ok", minutes: int = 0,
        camera: str = "cam1", positive: float | None = None) -> Record:
    return Record(key=key, result_key=f"results/{key}.json", camera=camera, status=status, kind="frame", label=label,
                  probability=p, positive_probability=positive, threshold=0.5 if positive is not None else None,
                  positive_class="car" if positive is not None else None, error_type=None, error_message=None,
                  processed_at=T0 + timedelta(minutes=minutes), model_version="v1", latency_ms=10.0,
                  source_etag="e")


def test_percentile_and_low_confidence() -> None:
    assert percentile([1, 2, 3, 4], 50) == 2.5 and percentile([], 50) is None
    near = rec("a", positive=0.55)
    far = rec("b", positive=0.95)
    multi = rec("c", p=0.52)
    assert low_confidence([far, near, multi], 0.1) == [multi, near]


def test_chart_bins_stack_to_one() -> None:
    assert bin_width(T0, T0 + timedelta(minutes=10)) == timedelta(minutes=1)
    assert bin_width(T0, T0 + timedelta(hours=5)) == timedelta(minutes=15)
    records = [rec("a", "car", minutes=0), rec("b", "bus", minutes=0), rec("c", "bus", minutes=2),
               rec("d", "car", minutes=2, camera="cam2"), rec("e", None, status="error", minutes=1)]
    chart = label_share_over_time(records, ["bus", "car"])
    assert chart["bins"] == 3 and [c["camera"] for c in chart["cameras"]] == ["cam1", "cam2"]
    first = chart["cameras"][0]["columns"][0]["stack"]
    assert [(s["label"], s["share"], s["offset"]) for s in first] == [("bus", 0.5, 0.0), ("car", 0.5, 0.5)]
    assert chart["cameras"][0]["columns"][1]["total"] == 0


def test_template_escapes_keys_and_messages() -> None:
    bad = rec('incoming/cam1/"><img src=x onerror=alert(1)>.jpg', status="error", label=None, p=None)
    bad = Record(**{**bad.__dict__, "error_type": "NotAnImageError", "error_message": "<b>boom</b>"})
    html = render({"bucket": "<b>", "generated_at": "t", "results": 1, "status": {"error": 1}, "models": {"v": 1},
                   "cards": [{"record": bad, "thumb": None, "no_thumb": "x", "time": "t", "p": -1, "percent": 0}],
                   "frames_total": 1, "cameras": ["cam1"], "labels": [], "colours": {}, "error_colour": "#f00",
                   "statuses": ["error"], "errors": [bad], "missing": [], "missing_pending": 0, "inputs": 1,
                   "chart": {"cameras": [], "bins": 0}, "clips": []})
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<b>boom</b>" not in html and "&lt;b&gt;boom&lt;/b&gt;" in html
    assert html.count("<script") == 1 and "script-src 'sha256-" in html


def test_relative_clip_links_are_quoted_paths_from_the_report() -> None:
    from ops.report import clip_link

    link = clip_link(None, None, "results/cam 1/clip#2.mp4.annotated.mp4", "relative", "reports/daily/", 0)  # type: ignore[arg-type]
    assert link == "../../results/cam%201/clip%232.mp4.annotated.mp4"


@pytest.mark.parametrize("i", [1, 33])  # an ok frame and an error
def test_bench_documents_are_real_results(i: int) -> None:
    from bench.ops_summary import _doc
    from tests.result_schema import assert_valid_result

    assert_valid_result(_doc(i, T0))


def test_every_field_ops_reads_is_in_the_schema() -> None:
    """ops reads what the schema describes: every field it uses is in it."""
    import json

    from tests.result_schema import SCHEMA_PATH

    schema = json.loads(SCHEMA_PATH.read_text())
    properties = set(schema["properties"])
    for defs in schema.get("$defs", {}).values():
        properties |= set(defs.get("properties", {}))
    used = {"status", "kind", "source", "error", "model", "positive_class", "threshold", "label", "probability",
            "probabilities", "timings_ms", "processed_at", "annotated_key", "summary", "video", "partial"}
    assert used <= properties, used - properties


def test_chart_bins_start_on_whole_multiples() -> None:
    records = [dataclasses.replace(rec(k, minutes=m), processed_at=T0 + timedelta(minutes=m, seconds=40))
               for k, m in (("a", 0), ("b", 1))]
    chart = label_share_over_time(records, ["car"])
    assert chart["first"] == "2026-01-01T00:00:00Z" and chart["bins"] == 2
    assert [c["tick"] for c in chart["cameras"][0]["columns"]] == ["00:00", "00:01"]


_LISTING = b"""<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><Prefix>results/</Prefix>
<KeyCount>3</KeyCount><MaxKeys>1000</MaxKeys><Delimiter>/</Delimiter><IsTruncated>true</IsTruncated>
<NextContinuationToken>tok</NextContinuationToken><EncodingType>url</EncodingType>
<Contents><Key>results/cam1/a%3Cscript%3E.json</Key><LastModified>2026-12-01T05:50:09.000Z</LastModified>
<ETag>"e5c0"</ETag><ChecksumAlgorithm>CRC32</ChecksumAlgorithm><Size>875</Size><StorageClass>STANDARD</StorageClass>
</Contents><Contents><Key>results/b.json</Key><LastModified>2026-12-01T05:50:10Z</LastModified><ETag></ETag>
<ChecksumAlgorithm>CRC32</ChecksumAlgorithm><ChecksumAlgorithm>SHA256</ChecksumAlgorithm><Size>0</Size>
<Owner><ID>abc</ID><DisplayName>me</DisplayName></Owner><RestoreStatus><IsRestoreInProgress>false</IsRestoreInProgress>
</RestoreStatus></Contents><Contents><Key>results/c.json</Key><Size>12</Size></Contents>
<CommonPrefixes><Prefix>results/cam1/</Prefix></CommonPrefixes><CommonPrefixes><Prefix>results/cam2/</Prefix>
</CommonPrefixes></ListBucketResult>"""
_VERSIONS = b"""<?xml version="1.0" encoding="UTF-8"?>
<ListVersionsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><IsTruncated>false</IsTruncated>
<Version><Key>k</Key><VersionId>v1</VersionId><IsLatest>true</IsLatest><Size>3</Size></Version>
<DeleteMarker><Key>k2</Key><VersionId>v2</VersionId><IsLatest>false</IsLatest></DeleteMarker></ListVersionsResult>"""


@pytest.mark.parametrize(("operation", "body"), [("ListObjectsV2", _LISTING), ("ListObjectVersions", _VERSIONS)])
def test_listing_parser_gives_botocores_result(operation: str, body: bytes) -> None:
    import botocore.session
    from botocore.parsers import RestXMLParser

    from ops.parsing import ListFriendlyParserFactory, fast_timestamp

    shape = botocore.session.get_session().get_service_model("s3").operation_model(operation).output_shape
    response = {"body": body, "headers": {"x-amz-request-id": "r"}, "status_code": 200}
    ours = ListFriendlyParserFactory(timestamp_parser=fast_timestamp).create_parser("rest-xml").parse(response, shape)
    theirs = RestXMLParser(timestamp_parser=fast_timestamp).parse(response, shape)
    assert ours == theirs and ours["ResponseMetadata"]["RequestId"] == "r"
    for list_name in ("Contents", "Versions", "DeleteMarkers"):  # the same members, in the same order
        assert [list(o) for o in ours.get(list_name, [])] == [list(o) for o in theirs.get(list_name, [])]
    if operation == "ListObjectsV2":
        assert [o["Size"] for o in ours["Contents"]] == [875, 0, 12] and ours["Contents"][1]["ETag"] == ""
        assert ours["Contents"][1]["ChecksumAlgorithm"] == ["CRC32", "SHA256"]
        assert ours["Contents"][1]["Owner"] == {"ID": "abc", "DisplayName": "me"}
        assert ours["Contents"][0]["LastModified"] == datetime(2026, 12, 1, 5, 50, 9, tzinfo=timezone.utc)
