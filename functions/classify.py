"""The cloud function's entry point: ``functions.classify.handler``.

A thin edge around :mod:`functions.service`: parse the event, load the model once per
container, run the core, log one JSON line per record, and answer the platform in its
own terms (``batchItemFailures`` for SQS, an exception for anything to retry otherwise).

Nothing happens at import time.  The module-level :func:`handler` builds its
:class:`App` from ``os.environ`` on the first call; tests and the local stack build
their own with :func:`make_handler` and injected dependencies.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from functions.events import ParsedEvent, SourceKind, parse_event
from functions.service import ClassifyService, Outcome, Status, StoreFactory, left_alone
from shared.bundle import load_pinned, resolve_version
from shared.clock import Clock, utc_now
from shared.config import FunctionSettings
from shared.errors import CCTVError, ConfigError, UnsupportedEventError
from shared.runtime import Classifier
from shared.storage import ObjectStore, make_client

ClassifierLoader = Callable[[ObjectStore], Classifier]
Handler = Callable[[Any, Any], dict[str, Any]]
ServiceFactory = Callable[[FunctionSettings, StoreFactory, Classifier, Clock], ClassifyService]

log = logging.getLogger("functions.classify")


def load_classifier(store: ObjectStore, settings: FunctionSettings) -> Classifier:
    """Resolve ``latest.json`` (or MODEL_VERSION) and read the manifest; fetch the rest behind.

    Raises a ``BundleError`` at once when no model is promoted or the manifest is missing,
    tampered with or incompatible.  The model files are then fetched (each checked against
    the manifest) and the sessions opened on a thread, while the caller downloads and
    decodes its first frames; a failure there is raised where the classifier is first used.
    """
    version, manifest_sha256 = resolve_version(store, settings.model_prefix, settings.model_version)
    return load_pinned(store, settings.model_prefix, version, manifest_sha256, Path(settings.model_cache_dir),
                       background=True)


def client_store_factory(settings: FunctionSettings) -> StoreFactory:
    """One boto3 client for the container (thread-safe), one ObjectStore per bucket."""
    client = make_client(settings.s3, max_pool_connections=max(16, 2 * settings.max_workers))
    return lambda bucket: ObjectStore(client, bucket)


class App:
    """The function with its dependencies injected; keeps the classifier between calls."""

    def __init__(self, settings: FunctionSettings, *, stores: StoreFactory | None = None,
                 loader: ClassifierLoader | None = None, clock: Clock = utc_now,
                 service: ServiceFactory = ClassifyService) -> None:
        self.settings = settings
        self._stores = stores
        self._loader = loader or (lambda store: load_classifier(store, settings))
        self._clock = clock
        self._service = service
        self._classifier: Classifier | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> App:
        _set_log_level(env.get("LOG_LEVEL", "INFO"))
        return cls(FunctionSettings.from_env(env))

    @property
    def stores(self) -> StoreFactory:
        if self._stores is None:  # boto3 is imported on first use, not when the App is built
            self._stores = client_store_factory(self.settings)
        return self._stores

    def classifier(self, event_bucket: str) -> Classifier:
        """The model, loaded on first need and kept for the life of the container.

        A failed load is not cached, so the next invocation tries again (for example
        once a good bundle has been promoted).
        """
        with self._lock:
            if self._classifier is not None and self._classifier.failed:
                self._classifier = None  # its files or sessions failed to load: try again
            if self._classifier is None:
                bucket = self.settings.model_bucket or event_bucket
                self._classifier = self._loader(self.stores(bucket))
                manifest = self._classifier.manifest
                log.info(json.dumps({"event": "model_loaded", "model_version": manifest.version,
                                     "backbone": manifest.backbone_name, "bucket": bucket}))
            return self._classifier

    def handle(self, event: Any, context: Any = None) -> dict[str, Any]:
        request_id = getattr(context, "aws_request_id", None) or getattr(context, "request_id", None)
        try:
            parsed = parse_event(event)
        except UnsupportedEventError as exc:  # log its shape only, never the event itself
            keys = sorted(map(str, event))[:10] if isinstance(event, Mapping) else type(event).__name__
            _log_line(logging.ERROR, request_id, status="failed", event_keys=keys, reason=exc.message)
            raise
        for reason in parsed.ignored:
            _log_line(logging.INFO, request_id, status="ignored", reason=reason)
        for bad in parsed.bad:
            _log_line(logging.ERROR, request_id, status="failed", item=bad.item_id, reason=bad.reason)
        outcomes = self._run(parsed, _deadline(context))
        for outcome in outcomes:
            _log_outcome(outcome, request_id)
        return _respond(parsed, outcomes)

    def _run(self, parsed: ParsedEvent, deadline: float | None) -> list[Outcome]:
        refs = parsed.refs
        alone = [left_alone(self.settings, ref) for ref in refs]
        in_scope = [ref for ref, outcome in zip(refs, alone, strict=True) if outcome is None]
        if not in_scope:  # nothing to classify here: don't pay for loading the model
            return [outcome or Outcome(ref, Status.IGNORED) for ref, outcome in zip(refs, alone, strict=True)]
        service = self._service(self.settings, self.stores, self.classifier(in_scope[0].bucket), self._clock)
        return service.run(refs, deadline=deadline)


def make_handler(settings: FunctionSettings, *, stores: StoreFactory | None = None,
                 loader: ClassifierLoader | None = None, clock: Clock = utc_now,
                 service: ServiceFactory = ClassifyService) -> Handler:
    """A ``handler(event, context)`` with injected dependencies (tests, the local stack, benchmarks)."""
    return App(settings, stores=stores, loader=loader, clock=clock, service=service).handle


def _deadline(context: Any) -> float | None:
    """When this invocation is cut off, in ``time.monotonic()`` seconds, from Lambda's
    ``context.get_remaining_time_in_millis()``; None for a context without it (tests, the local stack).
    """
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if not callable(remaining):
        return None
    try:
        return time.monotonic() + float(remaining()) / 1000
    except (TypeError, ValueError):
        return None


def _respond(parsed: ParsedEvent, outcomes: list[Outcome]) -> dict[str, Any]:
    failed = [o for o in outcomes if o.needs_retry]
    if parsed.source is SourceKind.SQS:
        # Name only the messages to redeliver; SQS deletes the rest.  Unreadable messages
        # are named too, so after maxReceiveCount they land in the dead-letter queue.
        ids = [o.ref.message_id for o in failed if o.ref.message_id] + [b.item_id for b in parsed.bad]
        return {"batchItemFailures": [{"itemIdentifier": i} for i in dict.fromkeys(ids)]}
    if failed:
        # Everything else is done; raising makes the platform retry the event, and the
        # records already written are then skipped as repeats.
        retryable = [o for o in failed if getattr(o.error, "retryable", False)]
        raise (retryable or failed)[0].error or RuntimeError("A record failed without an error.")
    if parsed.bad:
        raise UnsupportedEventError(
            f"{len(parsed.bad)} item(s) of the event could not be read ({parsed.bad[0].reason}); "
            "the others were processed. Check what sends events to this function.")
    counts = {status.value: 0 for status in Status}
    for outcome in outcomes:
        counts[outcome.status.value] += 1
    return {"source": parsed.source.value, "records": counts, "ignored_notifications": len(parsed.ignored)}


def _log_outcome(outcome: Outcome, request_id: str | None) -> None:
    result = outcome.result if outcome.status in (Status.OK, Status.ERROR) else None
    fields: dict[str, Any] = {"bucket": outcome.ref.bucket, "key": outcome.ref.key, "status": outcome.status.value,
                              "ms": outcome.ms}
    if result is not None:
        fields.update(_result_fields(result), model_version=result["model"]["version"],
                      result_key=outcome.result_key)
    if outcome.error is not None:
        fields["error"] = {"type": type(outcome.error).__name__, "message": str(outcome.error)}
    if outcome.reason:
        fields["reason"] = outcome.reason
    elif outcome.status is Status.IGNORED:
        fields["reason"] = "The key is not under INPUT_PREFIX (or is a folder marker); it was left alone."
    if outcome.ref.message_id:
        fields["message_id"] = outcome.ref.message_id
    level = logging.ERROR if outcome.needs_retry else logging.WARNING if outcome.status is Status.ERROR \
        else logging.INFO
    # A traceback only for bugs; our own errors already say what happened and what to do.
    bug = outcome.error if outcome.needs_retry and not isinstance(outcome.error, CCTVError) else None
    _log_line(level, request_id, exc_info=bug, **fields)


def _result_fields(result: dict[str, Any]) -> dict[str, Any]:
    """What a log line shows of a result: the label of a frame; the summary and speed of a clip."""
    if result.get("kind") != "video":
        return {"label": result["label"], "probability": result["probability"]}
    fields: dict[str, Any] = {"kind": "video", "annotated_key": result.get("annotated_key")}
    summary, video, rate = result.get("summary"), result.get("video"), result.get("throughput")
    if summary and video and rate:
        label = summary["dominant_label"]
        fields.update(label=label, label_share=summary["label_share"].get(label),
                      frames=video["frames_decoded"], frames_sampled=video["frames_sampled"],
                      frames_per_s=rate["frames_per_s"], partial=result.get("partial") is not None)
    return fields


def _log_line(level: int, request_id: str | None, *, exc_info: BaseException | None = None,
              **fields: Any) -> None:
    if request_id:
        fields["request_id"] = request_id
    log.log(level, json.dumps(fields, ensure_ascii=False, default=str), exc_info=exc_info)


def _set_log_level(name: str) -> None:
    level = logging.getLevelName(name.strip().upper())
    if not isinstance(level, int):
        raise ConfigError(f"Set LOG_LEVEL to DEBUG, INFO, WARNING or ERROR; it is {name!r}.", setting="LOG_LEVEL")
    logging.getLogger("functions").setLevel(level)


# -- the platform entry point ---------------------------------------------------------

_app: App | None = None
_app_lock = threading.Lock()


def get_app() -> App:
    """The container's App, built from the environment on first use."""
    global _app
    with _app_lock:
        if _app is None:
            _app = App.from_env(os.environ)
        return _app


def handler(event: Any, context: Any) -> dict[str, Any]:
    """AWS Lambda / Yandex Cloud Functions entry point."""
    return get_app().handle(event, context)
