"""Validates real API responses against the OpenAPI 3.1 document that describes them, with the
third-party `jsonschema` validator (Draft 2020-12, OpenAPI 3.1's schema dialect).

Usage: openapi_check.py DOCUMENT RESPONSES
  DOCUMENT   the served /api/v1/openapi.json
  RESPONSES  JSON list of {"method", "path" (the document's path template), "status",
             "content_type", "body"} recorded by crates/ironplant-api/tests/openapi.rs

For each response: the document must declare the operation, the status and the content type;
a JSON body must validate against the declared schema (every `$ref` resolved in the whole
document). Then every GET operation with a JSON response must have been exercised, except
those marked below. Exits 1 with one line per problem; prints a summary otherwise.
"""

import json
import sys

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

BASE = "urn:ironplant:openapi"
# GET operations the recorder cannot exercise as plain JSON requests.
NOT_EXERCISED = {
    ("get", "/api/v1/live"),  # WebSocket upgrade (its own tests)
    ("get", "/mqtt"),  # WebSocket upgrade (its own tests)
}


def pointer_escape(s):
    return s.replace("~", "~0").replace("/", "~1")


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        doc = json.load(f)
    with open(sys.argv[2], encoding="utf-8") as f:
        responses = json.load(f)
    registry = Registry().with_resource(BASE, Resource.from_contents(doc, default_specification=DRAFT202012))
    problems = []
    seen = set()
    validated = 0
    for r in responses:
        method, path, status = r["method"].lower(), r["path"], str(r["status"])
        where = f"{method.upper()} {path} -> {status}"
        op = doc["paths"].get(path, {}).get(method)
        if op is None:
            problems.append(f"{where}: the document has no such operation")
            continue
        seen.add((method, path))
        declared = op["responses"].get(status)
        if declared is None:
            problems.append(f"{where}: status not declared (declared: {sorted(op['responses'])})")
            continue
        if "$ref" in declared:
            name = declared["$ref"].rsplit("/", 1)[-1]
            declared = doc["components"]["responses"][name]
            base_pointer = f"/components/responses/{pointer_escape(name)}"
        else:
            base_pointer = f"/paths/{pointer_escape(path)}/{method}/responses/{status}"
        content = declared.get("content", {})
        ctype = (r["content_type"] or "").split(";")[0].strip()
        if not content:
            if r["body"]:
                problems.append(f"{where}: a body where the document declares none")
            continue
        if ctype not in content:
            problems.append(f"{where}: content type {ctype!r} not declared ({sorted(content)})")
            continue
        if ctype != "application/json":
            continue
        try:
            body = json.loads(r["body"])
        except ValueError as e:
            problems.append(f"{where}: body is not JSON: {e}")
            continue
        ref = f"{BASE}#{base_pointer}/content/{pointer_escape(ctype)}/schema"
        validator = jsonschema.Draft202012Validator(
            {"$ref": ref}, registry=registry, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
        )
        errors = sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
        for e in errors[:5]:
            at = "/".join(str(p) for p in e.absolute_path) or "(root)"
            problems.append(f"{where}: at {at}: {e.message}")
        validated += 1
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method != "get" or (method, path) in NOT_EXERCISED:
                continue
            if (method, path) not in seen:
                problems.append(f"GET {path}: in the document but never exercised by the test")
    if problems:
        print("\n".join(problems))
        sys.exit(1)
    print(f"{validated} JSON bodies valid against the document; {len(responses)} responses checked")


if __name__ == "__main__":
    main()
