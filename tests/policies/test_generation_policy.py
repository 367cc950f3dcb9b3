"""The generation policy: one test per reason code, combinations, fail-closed behaviour, version and hash."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from policies import (
    POLICY_ERROR,
    REASON_CODES,
    GenerationFacts,
    PolicyLoadError,
    default_policy,
    evaluate_generation,
    load_policy,
    policy_hash,
)
from policies.loader import DEFAULT_POLICY, schema_path_for

# Pinned identity of the shipped policy: editing the policy or its schema must come with a new version line.
PINNED_VERSION = "generation.v3"
PINNED_HASH = "f6f670da093379d0001d95e0274c19577fca9b67f00c1201415c313da8e952f8"


def allowed_facts(**changes: Any) -> GenerationFacts:
    facts = GenerationFacts(
        client_id="client:abc",
        purpose="demo",
        subject_id="subj_1",
        subject_exists=True,
        face_count=1,
        subject_distance=0.31,
        subject_match_threshold=0.6,
        blocked_identity_id=None,
        blocked_distance=None,
        block_match_threshold=0.5,
        consent_record_id="consent_1",
        consent_state="active",
        consent_purposes=("demo", "education"),
        consent_clients=("client:abc",),
        audio_duration_s=9.7,
        max_audio_s=120.0,
        smallest_face_px=16,
    )
    return dataclasses.replace(facts, **changes)


def test_allowed_request() -> None:
    decision = evaluate_generation(allowed_facts())
    assert decision.allowed and decision.reasons == [] and decision.messages == {}
    assert decision.policy_version == PINNED_VERSION


# One case per reason code: the smallest change to an allowed request that must deny with exactly that code.
SINGLE_REASON_CASES: dict[str, dict[str, Any]] = {
    "no_face": {"face_count": 0, "subject_distance": None},
    "multiple_faces": {"face_count": 2, "subject_distance": None},
    "blocked_identity": {"blocked_identity_id": "blocked_7", "blocked_distance": 0.42},
    "possible_protected_identity": {
        "blocked_identity_id": "blocked_7",
        "blocked_distance": 0.55,
        "block_review_threshold": 0.62,
    },
    "unknown_subject": {"subject_exists": False, "subject_distance": None, "consent_state": "active"},
    "subject_mismatch": {"subject_distance": 0.71},
    "subject_uncertain": {"subject_distance": 0.5, "subject_match_threshold": 0.42, "subject_review_threshold": 0.56},
    "no_consent": {"consent_state": "none", "consent_record_id": None},
    "consent_revoked": {"consent_state": "revoked"},
    "consent_expired": {"consent_state": "expired"},
    "consent_wrong_purpose": {"purpose": "advertising"},
    "consent_wrong_client": {"client_id": "client:other"},
    "audio_too_long": {"audio_duration_s": 120.5},
}


def test_every_reason_code_has_a_case_and_a_rule() -> None:
    assert set(SINGLE_REASON_CASES) == set(REASON_CODES)
    assert [rule.code for rule in default_policy().rules] == list(REASON_CODES)


@pytest.mark.parametrize("code", list(SINGLE_REASON_CASES))
def test_each_reason_code_denies_alone(code: str) -> None:
    decision = evaluate_generation(allowed_facts(**SINGLE_REASON_CASES[code]))
    assert not decision.allowed
    assert decision.reasons == [code]
    assert decision.messages[code] and "{" not in decision.messages[code]


def test_messages_are_filled_from_the_facts() -> None:
    decision = evaluate_generation(
        allowed_facts(consent_state="revoked", face_count=3, subject_distance=None)
    )
    assert "subj_1" in decision.messages["consent_revoked"]
    assert "3 faces" in decision.messages["multiple_faces"]
    # The smallest face counted is stated (issue 14), and a fact that is missing leaves no "None" in a message.
    assert "faces 16 px wide or more are counted" in decision.messages["multiple_faces"]
    unknown = evaluate_generation(allowed_facts(face_count=0, subject_distance=None, smallest_face_px=None))
    assert "None" not in unknown.messages["no_face"]


def test_all_matching_reasons_in_priority_order() -> None:
    facts = allowed_facts(
        face_count=2,
        subject_distance=None,
        blocked_identity_id="blocked_1",
        blocked_distance=0.2,
        consent_state="revoked",
        audio_duration_s=600.0,
    )
    decision = evaluate_generation(facts)
    assert decision.reasons == ["multiple_faces", "blocked_identity", "consent_revoked", "audio_too_long"]
    assert list(decision.messages) == decision.reasons


def test_unknown_subject_also_reports_missing_consent() -> None:
    facts = allowed_facts(
        subject_exists=False, subject_distance=None, consent_state="none", consent_record_id=None
    )
    assert evaluate_generation(facts).reasons == ["unknown_subject", "no_consent"]


def test_wrong_purpose_and_client_together() -> None:
    decision = evaluate_generation(allowed_facts(purpose="ads", client_id="client:x"))
    assert decision.reasons == ["consent_wrong_purpose", "consent_wrong_client"]


def test_wildcard_client_consent_allows_any_client() -> None:
    assert evaluate_generation(allowed_facts(client_id="client:x", consent_clients=("*",))).allowed


def test_empty_consent_lists_allow_nothing() -> None:
    decision = evaluate_generation(allowed_facts(consent_purposes=(), consent_clients=()))
    assert decision.reasons == ["consent_wrong_purpose", "consent_wrong_client"]


@pytest.mark.parametrize(
    ("distance", "threshold", "allowed"),
    [
        (0.6, 0.6, True),
        (0.60001, 0.6, False),
        (0.59999, 0.6, True),
        (0.5999, 0.6, True),
        (0.6001, 0.6, False),
    ],
)
def test_subject_threshold_comes_from_the_facts_and_rounds_conservatively(
    distance: float, threshold: float, allowed: bool
) -> None:
    decision = evaluate_generation(
        allowed_facts(subject_distance=distance, subject_match_threshold=threshold)
    )
    assert decision.allowed is allowed
    # The same distance under a looser threshold passes: nothing is hard-coded in the policy.
    assert evaluate_generation(allowed_facts(subject_distance=distance, subject_match_threshold=0.9)).allowed


# Below the 4-decimal resolution a block-list distance rounds down, i.e. towards blocking.
@pytest.mark.parametrize(
    ("distance", "blocked"), [(0.5, True), (0.50001, True), (0.5001, False), (0.49999, True), (0.7, False)]
)
def test_block_threshold_rounds_towards_blocking(distance: float, blocked: bool) -> None:
    decision = evaluate_generation(allowed_facts(blocked_identity_id="b1", blocked_distance=distance))
    assert ("blocked_identity" in decision.reasons) is blocked


def test_blocked_identity_without_a_distance_is_blocked() -> None:
    decision = evaluate_generation(allowed_facts(blocked_identity_id="b1", blocked_distance=None))
    assert decision.reasons == ["blocked_identity"]


def test_one_face_without_a_distance_is_a_mismatch() -> None:
    assert evaluate_generation(allowed_facts(subject_distance=None)).reasons == ["subject_mismatch"]


def test_audio_limit_is_exclusive_and_from_the_facts() -> None:
    assert evaluate_generation(allowed_facts(audio_duration_s=120.0)).allowed
    assert evaluate_generation(allowed_facts(audio_duration_s=120.00001)).reasons == ["audio_too_long"]
    assert evaluate_generation(allowed_facts(audio_duration_s=300.0, max_audio_s=600.0)).allowed


@pytest.mark.parametrize(
    "changes",
    [
        {"subject_distance": float("nan")},
        {"audio_duration_s": float("inf")},
        {"subject_match_threshold": -0.1},
        {"face_count": -1},
        {"consent_state": "maybe"},
        {"max_audio_s": "120"},
    ],
)
def test_bad_facts_fail_closed(changes: dict[str, Any]) -> None:
    decision = evaluate_generation(allowed_facts(**changes))
    assert not decision.allowed
    assert decision.reasons == [POLICY_ERROR]
    assert decision.errors and decision.messages[POLICY_ERROR]


def _copy_policy(tmp_path: Path, text: str | None = None, schema: str | None = None) -> Path:
    path = tmp_path / DEFAULT_POLICY.name
    path.write_text(text if text is not None else DEFAULT_POLICY.read_text())
    schema_target = schema_path_for(path)
    if schema is None:
        shutil.copy(schema_path_for(DEFAULT_POLICY), schema_target)
    else:
        schema_target.write_text(schema)
    return path


def test_a_rule_that_errors_at_evaluation_denies(tmp_path: Path) -> None:
    # Cedar skips a forbid whose condition errors (here: decimal overflow), which would silently allow.
    text = DEFAULT_POLICY.read_text() + (
        '\n@id("overflowing")\n@message("never shown")\n'
        'forbid (principal, action == Provatar::Action::"generate", resource)\n'
        "when { context.face_count + 9223372036854775807 > 0 };\n"
    )
    decision = evaluate_generation(allowed_facts(), policy=load_policy(_copy_policy(tmp_path, text)))
    assert not decision.allowed and decision.reasons == [POLICY_ERROR]
    assert any("overflow" in e for e in decision.errors)


def test_a_policy_without_permit_denies_with_policy_error(tmp_path: Path) -> None:
    text = (
        DEFAULT_POLICY.read_text()
        .replace("permit (", "forbid (")
        .replace('@id("allow_generation")', '@id("everything")\n@message("closed")')
    )
    with pytest.raises(PolicyLoadError, match="no permit"):
        load_policy(_copy_policy(tmp_path, text))


@pytest.mark.parametrize(
    ("mutation", "match"),
    [
        (lambda t: t.replace("// policy-version: generation.v3", "// no version"), "policy-version"),
        (lambda t: t.replace("context.face_count == 0", "context.face_count == "), "does not parse"),
        (lambda t: t.replace("context.face_count > 1", "context.faces > 1"), "validation"),
        (lambda t: t.replace('@id("multiple_faces")', '@id("no_face")'), "two forbid rules"),
        (lambda t: t.replace('@message("No face {smallest', '@note("No face {smallest'), "@message"),
    ],
)
def test_broken_policy_files_fail_at_load(tmp_path: Path, mutation: Any, match: str) -> None:
    path = _copy_policy(tmp_path, mutation(DEFAULT_POLICY.read_text()))
    with pytest.raises(PolicyLoadError, match=match) as info:
        load_policy(path)
    assert info.value.code == "policy_invalid"


def test_broken_schema_fails_at_load(tmp_path: Path) -> None:
    schema = json.loads(schema_path_for(DEFAULT_POLICY).read_text())
    del schema["Provatar"]["actions"]["generate"]["appliesTo"]["context"]["attributes"]["face_count"]
    with pytest.raises(PolicyLoadError, match="validation"):
        load_policy(_copy_policy(tmp_path, schema=json.dumps(schema)))
    with pytest.raises(PolicyLoadError, match="cannot read"):
        load_policy(tmp_path / "missing.v9.cedar")


def test_version_and_hash_are_stable_and_pinned(tmp_path: Path) -> None:
    first, second = load_policy(), load_policy(DEFAULT_POLICY)
    assert (
        (first.version, first.hash) == (second.version, second.hash) == (PINNED_VERSION, PINNED_HASH)
    ), "the shipped policy or schema changed: bump its '// policy-version:' line and update the pins here"
    assert first.hash == policy_hash(DEFAULT_POLICY.read_text(), schema_path_for(DEFAULT_POLICY).read_text())
    edited = load_policy(_copy_policy(tmp_path, DEFAULT_POLICY.read_text() + "\n// a comment\n"))
    assert edited.hash != first.hash
    decision = evaluate_generation(allowed_facts(), policy=first)
    assert (decision.policy_version, decision.policy_hash) == (PINNED_VERSION, PINNED_HASH)


def test_decision_to_dict_is_json_and_ids_are_unique() -> None:
    a = evaluate_generation(allowed_facts(consent_state="expired"))
    b = evaluate_generation(allowed_facts(consent_state="expired"))
    assert a.decision_id != b.decision_id
    data = json.loads(json.dumps(a.to_dict()))
    assert data["reasons"] == ["consent_expired"] and data["allowed"] is False
    assert data["evaluated_at"].endswith("Z") and data["policy_hash"] == PINNED_HASH


# --- bands (issue 15): a pair constructed below, inside and above each band ---------------------------------

BANDED = {"subject_match_threshold": 0.42, "subject_review_threshold": 0.56, "block_review_threshold": 0.62}


@pytest.mark.parametrize(
    ("distance", "reasons"),
    [
        (0.42, []),  # at the strict end: the subject
        (0.4201, ["subject_uncertain"]),
        (0.551, ["subject_uncertain"]),
        (0.56, ["subject_uncertain"]),  # the loose end belongs to the band
        (0.5601, ["subject_mismatch"]),
    ],
)
def test_subject_band(distance: float, reasons: list[str]) -> None:
    assert evaluate_generation(allowed_facts(subject_distance=distance, **BANDED)).reasons == reasons


@pytest.mark.parametrize(
    ("distance", "reasons"),
    [
        (0.5, ["blocked_identity"]),  # at the strict end (block_match_threshold 0.5): blocked outright
        (0.5001, ["possible_protected_identity"]),
        (0.551, ["possible_protected_identity"]),  # issue 15's missed actress: now held for review
        (0.62, ["possible_protected_identity"]),
        (0.6201, []),  # past the band: somebody else (the gate would not even report it)
    ],
)
def test_block_band(distance: float, reasons: list[str]) -> None:
    facts = allowed_facts(blocked_identity_id="blk_1", blocked_distance=distance, **BANDED)
    assert evaluate_generation(facts).reasons == reasons


def test_an_approval_lifts_only_its_own_review_code() -> None:
    both = allowed_facts(subject_distance=0.5, blocked_identity_id="blk_1", blocked_distance=0.55, **BANDED)
    assert evaluate_generation(both).reasons == ["possible_protected_identity", "subject_uncertain"]
    one = dataclasses.replace(both, approved_reviews=("subject_uncertain",))
    assert evaluate_generation(one).reasons == ["possible_protected_identity"]
    assert evaluate_generation(
        dataclasses.replace(both, approved_reviews=("subject_uncertain", "possible_protected_identity"))
    ).allowed


def test_an_approval_never_lifts_a_certain_match() -> None:
    approved = ("subject_uncertain", "possible_protected_identity")
    blocked = allowed_facts(blocked_identity_id="blk_1", blocked_distance=0.45, approved_reviews=approved, **BANDED)
    assert evaluate_generation(blocked).reasons == ["blocked_identity"]
    stranger = allowed_facts(subject_distance=0.7, approved_reviews=approved, **BANDED)
    assert evaluate_generation(stranger).reasons == ["subject_mismatch"]


def test_without_review_thresholds_the_match_threshold_alone_decides() -> None:
    # Facts from before the bands (no review thresholds) keep their v1 meaning.
    assert evaluate_generation(allowed_facts(subject_distance=0.61)).reasons == ["subject_mismatch"]
    assert evaluate_generation(allowed_facts(blocked_identity_id="b", blocked_distance=0.51)).allowed


@pytest.mark.parametrize(
    "changes",
    [
        {"subject_review_threshold": 0.3},  # loose end under the strict end: misconfigured
        {"block_review_threshold": 0.4},
        {"approved_reviews": ("blocked_identity",)},  # only the two review codes can be approved
        {"subject_review_threshold": float("nan")},
    ],
)
def test_bad_band_facts_fail_closed(changes: dict[str, Any]) -> None:
    decision = evaluate_generation(allowed_facts(**changes))
    assert decision.reasons == [POLICY_ERROR]
