"""Every object under a prefix, for the tools (``batch.score``'s plan, ``python -m ops``), never the function.

The folders right below the prefix (one per camera, usually) are found with one delimited
listing, then each is listed on its own thread, following continuation tokens.  On S3 that
turns N/1,000 sequential round trips into a few parallel ones, and a thousand cameras do not
wait on one continuation chain; on moto, which sorts every key under the prefix for each
page, it also avoids work quadratic in the bucket's size.

The continuation loop is our own rather than botocore's paginator: the paginator loads its
model from botocore's data folders, which lists every service's folder on a fresh session
(0.3 s, a tenth of a cached ``ops summary`` over 10,000 results).  How each page is parsed is
the client's business (``shared.storage.make_client(parser_factory=...)``: ``ops.parsing``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import datetime
from typing import Any

from shared.storage import translate


@dataclasses.dataclass(frozen=True)
class Listed:
    """One object from a listing, with the time S3 stored it."""

    key: str
    etag: str
    size: int
    last_modified: datetime


def pages(client: Any, bucket: str, prefix: str, delimiter: str | None = None) -> Iterator[dict[str, Any]]:
    """ListObjectsV2 pages, following continuation tokens; failures as ``shared.errors``."""
    from botocore import exceptions as bce

    kwargs = {"Bucket": bucket, "Prefix": prefix, **({"Delimiter": delimiter} if delimiter else {})}
    try:
        while True:
            page: dict[str, Any] = client.list_objects_v2(**kwargs)
            yield page
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return
            kwargs["ContinuationToken"] = token
    except (bce.BotoCoreError, bce.ClientError) as exc:
        raise translate(exc, bucket=bucket) from exc


def _listed(page: dict[str, Any]) -> list[Listed]:
    # Folder markers ("cam1/", written by consoles) are not objects anyone wants.
    return [Listed(item["Key"], item["ETag"].strip('"'), int(item["Size"]), item["LastModified"])
            for item in page.get("Contents", []) if not item["Key"].endswith("/")]


def _list_flat(client: Any, bucket: str, prefix: str) -> list[Listed]:
    return [obj for page in pages(client, bucket, prefix) for obj in _listed(page)]


def list_objects(client: Any, bucket: str, prefix: str, *, workers: int = 8,
                 on_folder: Callable[[list[Listed]], None] | None = None) -> list[Listed]:
    """Every object under ``prefix`` (folder markers aside), sorted by key; the folders below it concurrently.

    ``on_folder`` is called on the caller's thread with each folder's objects (and once with
    the objects right under the prefix) as soon as they are listed, so the caller can work on
    them while the other folders are still being listed.
    """
    direct: list[Listed] = []
    folders: list[str] = []
    for page in pages(client, bucket, prefix, "/"):
        direct += _listed(page)
        folders += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
    if on_folder is not None and direct:
        on_folder(direct)
    if not folders:
        return direct
    everything = list(direct)
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(folders)))) as pool:
        for done in as_completed([pool.submit(_list_flat, client, bucket, folder) for folder in folders]):
            objs = done.result()
            everything += objs
            if on_folder is not None:
                on_folder(objs)
    return sorted(everything, key=lambda o: o.key)
