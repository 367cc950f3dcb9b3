"""Load and validate a versioned Cedar policy + schema once, so a broken file stops the service at startup."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import cedarpy

from policies.errors import PolicyLoadError

DEFINITIONS = Path(__file__).parent / "definitions"
DEFAULT_POLICY = DEFINITIONS / "generation.v3.cedar"
_VERSION_RE = re.compile(r"^//\s*policy-version:\s*(\S+)\s*$", re.MULTILINE)
_CODE_RE = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Rule:
    """One denial rule: its Cedar policy id, reason code (@id) and human message (@message)."""

    policy_id: str
    code: str
    message: str


@dataclass(frozen=True)
class LoadedPolicy:
    """A validated policy set with its identity (version from the header line, hash of policy text +
    schema)."""

    path: Path
    version: str
    hash: str
    text: str
    schema_text: str
    rules: tuple[Rule, ...]  # forbid rules, in priority order (their order in the file)
    policy_set: cedarpy.PolicySet
    schema: cedarpy.Schema

    def rule_by_policy_id(self, policy_id: str) -> Rule | None:
        """The forbid rule Cedar reports as `policy_id`, if it is one."""
        return next((r for r in self.rules if r.policy_id == policy_id), None)

    @property
    def priority(self) -> dict[str, int]:
        """Reason code -> rank (0 = most important)."""
        return {rule.code: i for i, rule in enumerate(self.rules)}


def schema_path_for(policy_path: Path) -> Path:
    """`generation.v1.cedar` -> `generation.v1.schema.json` (the schema ships next to its policy)."""
    return policy_path.with_name(policy_path.name.removesuffix(".cedar") + ".schema.json")


def policy_hash(policy_text: str, schema_text: str) -> str:
    """SHA-256 (hex) over the length-prefixed UTF-8 policy text and schema text."""
    digest = hashlib.sha256()
    for part in (policy_text.encode("utf-8"), schema_text.encode("utf-8")):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def load_policy(path: Path | None = None) -> LoadedPolicy:
    """Read, parse and validate the policy at `path` (default: the shipped generation policy).

    Raises PolicyLoadError naming the file and every problem: a missing version line, a parse error, a schema
    validation error, a forbid rule without @id/@message, duplicate reason codes, or no permit rule.
    """
    path = Path(path) if path is not None else DEFAULT_POLICY
    schema_path = schema_path_for(path)
    try:
        text = path.read_text(encoding="utf-8")
        schema_text = schema_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyLoadError(f"cannot read policy {path} or its schema {schema_path}: {exc}") from exc
    version_match = _VERSION_RE.search(text)
    if version_match is None:
        raise PolicyLoadError(f"policy {path} has no '// policy-version: NAME' header line")
    try:
        schema = cedarpy.Schema.from_json_str(schema_text)
        policy_set = cedarpy.PolicySet.from_str(text)
        policies_json = json.loads(cedarpy.policies_to_json_str(text))
    except ValueError as exc:
        raise PolicyLoadError(f"policy {path} or schema {schema_path} does not parse: {exc}") from exc
    validation = cedarpy.validate_policies(text, schema)
    if not validation.validation_passed:
        problems = "; ".join(f"{e.policy_id}: {e.error}" for e in validation.errors)
        raise PolicyLoadError(f"policy {path} fails validation against {schema_path.name}: {problems}")
    rules = _rules(path, policies_json)
    return LoadedPolicy(
        path=path,
        version=version_match.group(1),
        hash=policy_hash(text, schema_text),
        text=text,
        schema_text=schema_text,
        rules=rules,
        policy_set=policy_set,
        schema=schema,
    )


def _rules(path: Path, policies_json: dict[str, object]) -> tuple[Rule, ...]:
    static = policies_json.get("staticPolicies")
    if policies_json.get("templates") or not isinstance(static, dict):
        raise PolicyLoadError(f"policy {path} must contain only static policies (no templates)")
    # Cedar numbers policies policy0, policy1, ... in file order; that order is the priority order.
    ordered = sorted(static.items(), key=lambda item: int(item[0].removeprefix("policy")))
    rules: list[Rule] = []
    permits = 0
    for policy_id, body in ordered:
        annotations = body.get("annotations") or {}
        code = annotations.get("id")
        if body.get("effect") == "permit":
            permits += 1
            continue
        message = annotations.get("message")
        if not code or not _CODE_RE.match(code) or not message:
            raise PolicyLoadError(
                f'forbid rule {policy_id} in {path} needs a snake_case @id("reason_code") '
                'and a @message("...")'
            )
        if any(r.code == code for r in rules):
            raise PolicyLoadError(f"reason code '{code}' is used by two forbid rules in {path}")
        rules.append(Rule(policy_id=policy_id, code=code, message=message))
    if permits == 0:
        raise PolicyLoadError(f"policy {path} has no permit rule, so it would deny every request")
    return tuple(rules)
