"""Turn KEDA's ScaledObject CRD into the JSON Schema the tests check our ScaledObjects against.

    python deploy/kubernetes/schemas/extract_keda_schema.py keda.sh_scaledobjects.yaml \
        --source "kedacore/keda v2.20.2 (68a5b50) config/crd/bases/keda.sh_scaledobjects.yaml" \
        > deploy/kubernetes/schemas/keda-scaledobject.json

The input is config/crd/bases/keda.sh_scaledobjects.yaml from the kedacore/keda repository at a
release tag. The output is the served v1alpha1 version's openAPIV3Schema as JSON Schema draft 7,
with two additions that make it as strict as the API server is at `kubectl apply`:

- `apiVersion` and `kind` are pinned to keda.sh/v1alpha1 and ScaledObject;
- every object that lists its properties (and neither declares `additionalProperties` nor
  preserves unknown fields) gets `additionalProperties: false`, because kubectl's default
  strict field validation rejects unknown fields (a typo such as `scalingModifier` fails).

The CRD's one CEL rule (minReplicaCount <= maxReplicaCount) has no JSON Schema form; the
tests check it themselves.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import yaml


def strict(node: Any) -> Any:
    """Copy of `node` with `additionalProperties: false` on every closed object."""
    if isinstance(node, list):
        return [strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: strict(value) for key, value in node.items()}
    closed = (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    )
    if closed:
        out["additionalProperties"] = False
    return out


def extract(crd: dict[str, Any], source: str) -> dict[str, Any]:
    """The JSON Schema of the served storage version of a CustomResourceDefinition."""
    versions = [v for v in crd["spec"]["versions"] if v.get("served") and v.get("storage")]
    if len(versions) != 1:
        raise SystemExit("expected exactly one served storage version in the CRD")
    version = versions[0]
    schema = strict(version["schema"]["openAPIV3Schema"])
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    schema["properties"]["apiVersion"] = {"const": f"{group}/{version['name']}"}
    schema["properties"]["kind"] = {"const": kind}
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "spec"})
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$comment": f"Extracted from {source} by extract_keda_schema.py; do not edit by hand.",
        "title": f"{kind} ({group}/{version['name']})",
        **schema,
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("crd", help="path of keda.sh_scaledobjects.yaml")
    parser.add_argument("--source", required=True, help="where the CRD came from (repo, tag)")
    args = parser.parse_args(argv)
    with open(args.crd, encoding="utf-8") as handle:
        crd = yaml.safe_load(handle)
    json.dump(extract(crd, args.source), sys.stdout, indent=1, sort_keys=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
