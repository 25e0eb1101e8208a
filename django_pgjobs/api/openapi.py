"""The OpenAPI description: ``openapi.yaml``, with the arguments of each typed task.

The file describes the routes; for every ``@task(typed=True)`` registered in this
process the description served adds the schema of a request to enqueue it (its
``args`` and ``kwargs`` as its signature takes them: ``typed.Signature.schema``), and
``POST /jobs`` takes any of those or a request for another task. The additions are
JSON, which YAML reads as it is, written where the file leaves room for them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..tasks import registered_tasks
from ..typed import component_name

OPENAPI = Path(__file__).resolve().parent.parent / "openapi.yaml"

#: The line of the enqueue request's schema, which the served description replaces.
REQUEST_SCHEMA = '            schema: {$ref: "#/components/schemas/EnqueueRequest"}\n'
#: How the file ends: inside components.schemas, where more entries can follow.
LAST_SCHEMAS_INDENT = "    "
GENERIC = {"$ref": "#/components/schemas/EnqueueRequest"}


def document() -> str:
    """The description served at ``openapi.yaml``."""
    text = OPENAPI.read_text()
    typed = {
        name: task.signature for name, task in sorted(registered_tasks().items()) if task.typed
    }
    if not typed:
        return text
    components: dict[str, Any] = {}
    requests = []
    for name, signature in typed.items():
        schema = signature.schema(components)  # type: ignore[union-attr]
        key = component_name(f"task.{name}")
        components[key] = {
            "description": f"Enqueue the typed task {name}: its arguments as it takes them.",
            "allOf": [
                GENERIC,
                {"type": "object", "properties": {"task": {"const": name}, **schema}},
            ],
        }
        requests.append({"$ref": f"#/components/schemas/{key}"})
    others = {"properties": {"task": {"not": {"enum": list(typed)}}}}
    request = {"anyOf": [*requests, {"allOf": [GENERIC, others]}]}
    text = text.replace(REQUEST_SCHEMA, f"            schema: {json.dumps(request)}\n", 1)
    added = "".join(
        f"{LAST_SCHEMAS_INDENT}{json.dumps(key)}: {json.dumps(value)}\n"
        for key, value in components.items()
    )
    return text.rstrip("\n") + "\n" + added
