"""The JSON Schema of report.json, generated from `Report`. The shipped copy is rewritten by

    python -m edgekd.report.schema

and a test fails when it differs from what the model generates."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from .model import Report

SCHEMA_FILE = Path(__file__).with_name("report.schema.json")


def json_schema() -> dict[str, Any]:
    """The JSON Schema of report.json, from the model (what report.json serialises to)."""
    schema = Report.model_json_schema(mode="serialization", by_alias=True)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": "edgekd/report.schema.json",
            "description": "report.json written by `edgekd optimize`. Generated from edgekd.report.model.Report "
                           "by `python -m edgekd.report.schema`; do not edit by hand.", **schema}


def schema_text() -> str:
    return json.dumps(json_schema(), indent=1, sort_keys=False) + "\n"


if __name__ == "__main__":
    SCHEMA_FILE.write_text(schema_text())
    print(f"wrote {SCHEMA_FILE}", file=sys.stderr)
