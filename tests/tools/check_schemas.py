#!/usr/bin/python3
"""Checks JSON samples against proto/openapi.yaml's component schemas.

Usage: check_schemas.py SPEC SAMPLES
SAMPLES is a JSON object {schema name: [instance, ...]} (tests/tools/resource_samples.cc).
For every instance: each property it has is declared by the schema (unless the schema allows
additional properties), each declared property is present when the schema requires it, every
value has the declared type (nullable, enum, $ref, allOf and anyOf/oneOf are followed), and
across all instances of a schema every declared property appears at least once, so a property
the spec documents but the codec never writes is caught too. Prints every mismatch; exit 1 if
any.
"""
import json
import sys

import yaml

TYPES = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
}


def main():
    spec = yaml.safe_load(open(sys.argv[1]))
    samples = json.load(open(sys.argv[2]))
    schemas = spec["components"]["schemas"]
    errors = []
    seen = {}  # schema name -> declared properties seen at least once

    def resolve(s):
        while "$ref" in s:
            s = schemas[s["$ref"].rsplit("/", 1)[1]]
        return s

    def props_of(s):
        """Declared properties and required names of a (possibly allOf) object schema."""
        s = resolve(s)
        props, required, extra = dict(s.get("properties", {})), set(s.get("required", [])), \
            s.get("additionalProperties", None)
        for part in s.get("allOf", []):
            p, r, e = props_of(part)
            props.update(p)
            required |= r
            extra = extra if extra is not None else e
        return props, required, extra

    def check(v, s, where):
        s = resolve(s)
        if v is None:
            nullable = s.get("nullable") or s.get("enum") == [None] or any(
                resolve(alt).get("nullable") for alt in s.get("anyOf", []) + s.get("oneOf", []))
            if not nullable:
                errors.append(f"{where}: null, but the schema is not nullable")
            return
        alts = s.get("anyOf") or s.get("oneOf")
        if alts:
            before = len(errors)
            for alt in alts:
                mark = len(errors)
                check(v, alt, where)
                if len(errors) == mark:
                    del errors[before:]
                    return
            del errors[before + 1:]
            return
        if "enum" in s and v not in s["enum"]:
            errors.append(f"{where}: {v!r} is not one of {s['enum']}")
        t = s.get("type")
        if t is None and "allOf" in s:
            t = "object"
        if t and not TYPES[t](v):
            errors.append(f"{where}: {type(v).__name__} {v!r}, schema says {t}")
            return
        if t == "array" and "items" in s:
            for i, item in enumerate(v):
                check(item, s["items"], f"{where}[{i}]")
        if t == "object":
            props, required, extra = props_of(s)
            for name in sorted(required - v.keys()):
                errors.append(f"{where}: required property '{name}' is missing")
            for name, value in v.items():
                if name in props:
                    check(value, props[name], f"{where}.{name}")
                elif isinstance(extra, dict):
                    check(value, extra, f"{where}.{name}")
                elif not extra and props:
                    errors.append(f"{where}: property '{name}' is not in the schema")

    for name, instances in samples.items():
        if name not in schemas:
            errors.append(f"{name}: no such schema in the spec")
            continue
        props, _, _ = props_of(schemas[name])
        seen[name] = set()
        for i, inst in enumerate(instances):
            check(inst, schemas[name], f"{name}[{i}]")
            seen[name] |= set(inst.keys()) if isinstance(inst, dict) else set()
        for prop in sorted(set(props) - seen[name]):
            errors.append(f"{name}: the spec declares '{prop}', the codec never writes it")

    for e in errors:
        print(e)
    print(f"checked {sum(len(i) for i in samples.values())} instances of {len(samples)} schemas, "
          f"{len(errors)} mismatches")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
