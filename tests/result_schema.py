"""The result documents' JSON Schema (docs/schema/result.schema.json), for tests to check real results."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "docs" / "schema" / "result.schema.json"


@functools.cache
def _validator() -> Any:
    import jsonschema  # comes with moto's server extra; a test dependency only

    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def schema_errors(doc: dict[str, Any]) -> list[str]:
    """Every way ``doc`` breaks the schema, as ``path: message`` lines (empty when it is valid)."""
    errors = sorted(_validator().iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{'/'.join(map(str, e.absolute_path)) or '(document)'}: {e.message}" for e in errors]


def assert_valid_result(doc: dict[str, Any]) -> None:
    errors = schema_errors(doc)
    assert not errors, "the result breaks docs/schema/result.schema.json:\n" + "\n".join(errors)
