"""The subset of JSON Schema that :func:`genrep.diting.llm.constrained.generate_json` decodes to.

What a schema means for the decoder, with nothing about tokens: ``$ref`` (``#/...`` pointers into
the document) and a one-schema ``allOf`` merged in (:func:`resolve`), the branches of ``anyOf`` /
``oneOf`` / a list ``type`` (:func:`alternatives`, :func:`branch`), the kind of value a schema asks
for (:func:`kind_of`), an integer's bounds (:func:`int_bounds`), and :func:`check_schema`, which
raises :class:`ValueError` naming the first construct the decoder cannot guarantee (``pattern``,
``format``, ``minLength``, ``multipleOf``, ``prefixItems``, ``not``, ``allOf`` of several schemas, a
``$ref`` outside the document, ...).
"""

from __future__ import annotations

from typing import Any

MAX_DEPTH = 64

# keywords that change nothing about what we emit
# keywords that change nothing about what we emit
_IGNORED = {
    "title",
    "description",
    "default",
    "examples",
    "$schema",
    "$id",
    "$comment",
    "$defs",
    "definitions",
    "discriminator",
    "readOnly",
    "writeOnly",
    "deprecated",
    "additionalProperties",
    "required",
}
_HANDLED = {
    "type",
    "properties",
    "items",
    "minItems",
    "maxItems",
    "enum",
    "const",
    "anyOf",
    "oneOf",
    "allOf",
    "$ref",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "maxLength",
    "minLength",
    "uniqueItems",
}
_TYPES = {"object", "array", "string", "integer", "number", "boolean", "null"}


def _pointer(root: dict, ref: str) -> dict:
    if not isinstance(ref, str) or not ref.startswith("#"):
        raise ValueError(f"unsupported schema construct: $ref {ref!r} (only '#/...' references into the schema)")
    node: Any = root
    for part in [p for p in ref[1:].split("/") if p]:
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise ValueError(f"unresolvable $ref {ref!r}")
    if not isinstance(node, dict):
        raise ValueError(f"$ref {ref!r} does not point to a schema")
    return node


def resolve(schema: Any, root: dict) -> dict:
    """``schema`` with ``$ref`` (siblings kept) and a one-schema ``allOf`` merged in."""
    if schema is True:
        return {}
    if not isinstance(schema, dict):
        raise ValueError(f"unsupported schema construct: {schema!r} is not a schema object")
    for _ in range(MAX_DEPTH):
        if "$ref" in schema:
            target = _pointer(root, schema["$ref"])
            schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        elif "allOf" in schema:
            parts = schema["allOf"]
            if not isinstance(parts, list) or len(parts) != 1:
                raise ValueError("unsupported schema construct: allOf with several schemas")
            rest = {k: v for k, v in schema.items() if k != "allOf"}
            schema = {**resolve(parts[0], root), **rest}
        else:
            return schema
    raise ValueError("unsupported schema construct: $ref cycle")


def alternatives(schema: dict) -> list[dict] | None:
    """The branches of an anyOf / oneOf / list-``type`` schema (siblings merged in), else None."""
    for key in ("anyOf", "oneOf"):
        if key in schema:
            alts = schema[key]
            if not isinstance(alts, list) or not alts:
                raise ValueError(f"unsupported schema construct: empty {key}")
            rest = {k: v for k, v in schema.items() if k not in ("anyOf", "oneOf")}
            return [{**rest, "__alt__": alt} for alt in alts]
    if isinstance(schema.get("type"), list):
        types = schema["type"]
        if not types:
            raise ValueError("unsupported schema construct: empty type list")
        return [{**schema, "type": t} for t in types]
    return None


def branch(alt: dict, root: dict) -> dict:
    """A branch from :func:`alternatives`, resolved (the anyOf siblings under the branch's own keywords)."""
    if "__alt__" not in alt:
        return alt
    siblings = {k: v for k, v in alt.items() if k != "__alt__" and k not in _IGNORED}
    return {**siblings, **resolve(alt["__alt__"], root)}


def kind_of(schema: dict) -> str:
    if "const" in schema:
        return "const"
    if "enum" in schema:
        if not isinstance(schema["enum"], list) or not schema["enum"]:
            raise ValueError("unsupported schema construct: empty enum")
        return "enum"
    if "anyOf" in schema or "oneOf" in schema or isinstance(schema.get("type"), list):
        return "anyOf"
    kind = schema.get("type")
    if kind is None:
        if "properties" in schema:
            return "object"
        if "items" in schema:
            return "array"
        return "any"
    if kind not in _TYPES:
        raise ValueError(f"unsupported schema construct: type {kind!r}")
    return kind


def int_bounds(schema: dict) -> tuple[int | None, int | None]:
    lo, hi = schema.get("minimum"), schema.get("maximum")
    xlo, xhi = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    lo = None if lo is None else int(-(-lo // 1))  # ceil
    hi = None if hi is None else int(hi // 1)
    if isinstance(xlo, (int, float)) and not isinstance(xlo, bool):
        lo = max(lo, int(xlo // 1) + 1) if lo is not None else int(xlo // 1) + 1
    if isinstance(xhi, (int, float)) and not isinstance(xhi, bool):
        hi = min(hi, int(-(-xhi // 1)) - 1) if hi is not None else int(-(-xhi // 1)) - 1
    if lo is not None and hi is not None and lo > hi:
        raise ValueError(f"unsatisfiable integer bounds [{lo}, {hi}]")
    return lo, hi


def check_schema(schema: dict) -> None:
    """Raise :class:`ValueError` naming the first construct :func:`generate_json` does not support."""
    if not isinstance(schema, dict):
        raise ValueError("the schema must be a JSON object")
    seen: set[str] = set()  # $refs checked already (a recursive schema refers to itself)

    def walk(node: Any, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise ValueError(f"unsupported schema construct: nesting deeper than {MAX_DEPTH}")
        if isinstance(node, dict) and isinstance(node.get("$ref"), str):
            if node["$ref"] in seen and len(node) == 1:
                return
            seen.add(node["$ref"])
        node = resolve(node, schema)
        for key, value in node.items():
            if key in _IGNORED or key in _HANDLED or key == "__alt__":
                continue
            raise ValueError(f"unsupported schema construct: {key}")
        if node.get("minLength", 0) not in (0, None):
            raise ValueError("unsupported schema construct: minLength")
        if node.get("uniqueItems") is True:
            raise ValueError("unsupported schema construct: uniqueItems")
        kind = kind_of(node)
        if kind == "anyOf":
            for alt in alternatives(node) or []:
                walk(branch(alt, schema), depth + 1)
        elif kind == "object":
            props = node.get("properties") or {}
            if not isinstance(props, dict):
                raise ValueError("unsupported schema construct: properties that are not an object")
            missing = [k for k in node.get("required") or [] if k not in props]
            if missing:
                raise ValueError(f"unsupported schema construct: required property {missing[0]!r} without a schema")
            for sub in props.values():
                walk(sub, depth + 1)
        elif kind == "array":
            items = node.get("items", {})
            if isinstance(items, list):
                raise ValueError("unsupported schema construct: items as a list (tuple validation)")
            lo, hi = node.get("minItems", 0) or 0, node.get("maxItems")
            if hi is not None and hi < lo:
                raise ValueError(f"unsatisfiable array bounds [{lo}, {hi}]")
            walk(items, depth + 1)
        elif kind == "integer":
            int_bounds(node)
        elif kind == "number":
            if "exclusiveMinimum" in node or "exclusiveMaximum" in node:
                raise ValueError("unsupported schema construct: exclusiveMinimum / exclusiveMaximum on a number")
            lo, hi = node.get("minimum"), node.get("maximum")
            if lo is not None and hi is not None and lo > hi:
                raise ValueError(f"unsatisfiable number bounds [{lo}, {hi}]")

    walk(schema, 0)
