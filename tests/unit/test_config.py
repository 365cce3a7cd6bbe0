"""shared.config: settings from a plain mapping, prefix rules, and refusals."""

from __future__ import annotations

import dataclasses

import pytest

from shared.config import (
    DEFAULT_MAX_IMAGE_BYTES,
    DEFAULT_MAX_IMAGE_PIXELS,
    DecodeLimits,
    FunctionSettings,
    S3Settings,
    VideoLimits,
    normalise_prefix,
)
from shared.errors import ConfigError


def test_defaults_from_an_empty_environment() -> None:
    settings = FunctionSettings.from_env({})
    assert settings.model_bucket is None
    assert settings.input_prefix == "incoming/"
    assert settings.results_prefix == "results/"
    assert settings.model_prefix == "models/"
    assert settings.model_version is None
    assert settings.model_cache_dir == "/tmp/cctv-model"
    assert settings.max_workers == 4
    assert settings.s3 == S3Settings(endpoint_url=None, region=None)
    assert settings.limits == DecodeLimits(DEFAULT_MAX_IMAGE_BYTES, DEFAULT_MAX_IMAGE_PIXELS)
    assert settings.limits.max_bytes == 25 * 1024 * 1024
    assert settings.limits.max_pixels == 50_000_000
    assert settings.video == VideoLimits(max_bytes=200 * 1024 * 1024, max_duration_s=600.0, max_frames=1500,
                                         sample_fps=None)
    # The constructor's defaults and from_env({}) agree.
    assert settings == FunctionSettings()


def test_every_setting_is_read_from_the_mapping() -> None:
    env = {
        "MODEL_BUCKET": "models-bucket",
        "INPUT_PREFIX": "frames/in",
        "RESULTS_PREFIX": "/frames/out/",
        "MODEL_PREFIX": "ml/models",
        "MODEL_VERSION": "20240101-120000",
        "MODEL_CACHE_DIR": "/tmp/other",
        "S3_ENDPOINT_URL": "http://127.0.0.1:9000",
        "AWS_REGION": "ru-central1",
        "MAX_IMAGE_BYTES": "1000",
        "MAX_IMAGE_PIXELS": "2000",
        "MAX_WORKERS": "8",
        "MAX_VIDEO_BYTES": "5000",
        "MAX_VIDEO_SECONDS": "90",
        "MAX_VIDEO_FRAMES": "300",
        "VIDEO_SAMPLE_FPS": "2.5",
    }
    settings = FunctionSettings.from_env(env)
    assert settings.model_bucket == "models-bucket"
    assert (settings.input_prefix, settings.results_prefix, settings.model_prefix) == (
        "frames/in/", "frames/out/", "ml/models/")
    assert settings.model_version == "20240101-120000"
    assert settings.model_cache_dir == "/tmp/other"
    assert settings.s3 == S3Settings(endpoint_url="http://127.0.0.1:9000", region="ru-central1")
    assert settings.limits == DecodeLimits(max_bytes=1000, max_pixels=2000)
    assert settings.max_workers == 8
    assert settings.video == VideoLimits(max_bytes=5000, max_duration_s=90.0, max_frames=300, sample_fps=2.5)


def test_fallback_names_and_empty_values() -> None:
    settings = FunctionSettings.from_env({
        "BUCKET": "fallback-bucket", "AWS_ENDPOINT_URL_S3": "http://minio:9000", "AWS_DEFAULT_REGION": "eu-west-1",
        "MODEL_VERSION": "", "MAX_WORKERS": "", "MAX_IMAGE_BYTES": "",
    })
    assert settings.model_bucket == "fallback-bucket"
    assert settings.s3 == S3Settings(endpoint_url="http://minio:9000", region="eu-west-1")
    assert settings.model_version is None  # empty means unset, not a version called ""
    assert settings.max_workers == 4
    assert settings.limits.max_bytes == DEFAULT_MAX_IMAGE_BYTES
    # The specific names win over the fallbacks.
    both = FunctionSettings.from_env({"MODEL_BUCKET": "a", "BUCKET": "b", "S3_ENDPOINT_URL": "http://x",
                                      "AWS_ENDPOINT_URL_S3": "http://y", "AWS_REGION": "r1",
                                      "AWS_DEFAULT_REGION": "r2"})
    assert both.model_bucket == "a"
    assert both.s3 == S3Settings(endpoint_url="http://x", region="r1")


def test_settings_are_frozen() -> None:
    settings = FunctionSettings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.input_prefix = "other/"  # type: ignore[misc]  # the assignment mypy refuses is what is tested


@pytest.mark.parametrize(("raw", "expected"), [
    ("incoming", "incoming/"),
    ("incoming/", "incoming/"),
    ("/incoming", "incoming/"),
    ("//incoming//", "incoming/"),
    ("  incoming/  ", "incoming/"),
    ("a/b/c", "a/b/c/"),
    ("", ""),
    ("/", ""),
    ("   ", ""),
])
def test_normalise_prefix(raw: str, expected: str) -> None:
    assert normalise_prefix(raw) == expected


def test_prefixes_are_normalised_by_the_constructor_too() -> None:
    settings = FunctionSettings(input_prefix="/in", results_prefix="out//", model_prefix=" m ")
    assert (settings.input_prefix, settings.results_prefix, settings.model_prefix) == ("in/", "out/", "m/")


@pytest.mark.parametrize(("env", "names"), [
    pytest.param({"RESULTS_PREFIX": "incoming/results/"}, ("INPUT_PREFIX", "RESULTS_PREFIX"),
                 id="results-inside-input"),
    pytest.param({"INPUT_PREFIX": "results/incoming"}, ("INPUT_PREFIX", "RESULTS_PREFIX"),
                 id="input-inside-results"),
    pytest.param({"INPUT_PREFIX": ""}, ("INPUT_PREFIX", "RESULTS_PREFIX"), id="empty-input"),
    pytest.param({"INPUT_PREFIX": "/"}, ("INPUT_PREFIX", "RESULTS_PREFIX"), id="slash-only-input"),
    pytest.param({"RESULTS_PREFIX": ""}, ("INPUT_PREFIX", "RESULTS_PREFIX"), id="empty-results"),
    pytest.param({"MODEL_PREFIX": ""}, ("INPUT_PREFIX", "MODEL_PREFIX"), id="empty-models"),
    pytest.param({"RESULTS_PREFIX": "models/results"}, ("RESULTS_PREFIX", "MODEL_PREFIX"),
                 id="results-inside-models"),
    pytest.param({"MODEL_PREFIX": "incoming/models/"}, ("INPUT_PREFIX", "MODEL_PREFIX"),
                 id="models-inside-input"),
    pytest.param({"RESULTS_PREFIX": "/incoming/"}, ("INPUT_PREFIX", "RESULTS_PREFIX"), id="same-after-normalising"),
])
def test_overlapping_prefixes_are_refused(env: dict[str, str], names: tuple[str, str]) -> None:
    with pytest.raises(ConfigError) as info:
        FunctionSettings.from_env(env)
    message = str(info.value)
    assert names[0] in message and names[1] in message
    assert info.value.context["setting"] in names
    assert message.endswith(".")
    assert info.value.exit_code == 2


def test_prefixes_that_only_share_a_name_start_are_not_overlapping() -> None:
    # "incoming/" and "incoming-results/" are disjoint because of the trailing slash.
    settings = FunctionSettings.from_env({"INPUT_PREFIX": "incoming", "RESULTS_PREFIX": "incoming-results",
                                          "MODEL_PREFIX": "incomingmodels"})
    assert settings.results_prefix == "incoming-results/"


@pytest.mark.parametrize("name", ["MAX_WORKERS", "MAX_IMAGE_BYTES", "MAX_IMAGE_PIXELS"])
@pytest.mark.parametrize("raw", ["four", "1.5", "1e6", "0x10", "0", "-3"])
def test_bad_integers_are_refused_naming_the_setting(name: str, raw: str) -> None:
    with pytest.raises(ConfigError) as info:
        FunctionSettings.from_env({name: raw})
    message = str(info.value)
    assert name in message
    assert info.value.context["setting"] == name
    assert message.endswith(".")
    assert message.startswith("Set ")


def test_decode_limits_from_env_alone() -> None:
    assert DecodeLimits.from_env({}) == DecodeLimits()
    assert DecodeLimits.from_env({"MAX_IMAGE_BYTES": " 42 ", "MAX_IMAGE_PIXELS": "7"}) == DecodeLimits(42, 7)


def test_s3_settings_for_aws_itself_have_no_endpoint() -> None:
    assert S3Settings.from_env({"S3_ENDPOINT_URL": ""}).endpoint_url is None


def test_video_limits_are_refused_through_function_settings_too() -> None:
    with pytest.raises(ConfigError) as info:
        FunctionSettings.from_env({"VIDEO_SAMPLE_FPS": "0"})
    assert info.value.context["setting"] == "VIDEO_SAMPLE_FPS" and "positive" in str(info.value)
