"""Hook tokens: bound to one job and one provider, expiring, and rotatable."""

from __future__ import annotations

import time

import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from submitter.tokens import SALT, BadHookToken, HookSigner

OLD, NEW = "old-secret-0123456789abcdef", "new-secret-0123456789abcdef"


def test_rotation_new_tokens_use_the_first_secret_and_any_secret_verifies() -> None:
    before = HookSigner([OLD], max_age=3600).sign_hook_token("job-1", "ttapi")
    rotated = HookSigner([NEW, OLD], max_age=3600)
    assert rotated.verify_hook_token(before, "ttapi").job_id == "job-1"  # in flight across the rotation
    after = rotated.sign_hook_token("job-2", "ttapi")
    assert HookSigner([NEW], max_age=3600).verify_hook_token(after, "ttapi").job_id == "job-2"
    with pytest.raises(BadHookToken):
        HookSigner([OLD], max_age=3600).verify_hook_token(after, "ttapi")
    with pytest.raises(BadHookToken):  # once the old secret is dropped, its tokens stop working
        HookSigner([NEW], max_age=3600).verify_hook_token(before, "ttapi")


def test_tokens_expire_after_max_age() -> None:
    class Aged(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - 3601

    aged = URLSafeTimedSerializer([NEW], salt=SALT, signer=Aged).dumps(["job-1", "ttapi"])
    with pytest.raises(BadHookToken, match="SignatureExpired"):
        HookSigner([NEW], max_age=3600).verify_hook_token(aged, "ttapi")
    assert HookSigner([NEW], max_age=7200).verify_hook_token(aged, "ttapi").job_id == "job-1"


def test_a_token_is_bound_to_its_provider_and_payload_shape() -> None:
    signer = HookSigner([NEW], max_age=3600)
    token = signer.sign_hook_token("job-1", "ttapi")
    with pytest.raises(BadHookToken, match="for provider 'ttapi', not 'acedata'"):
        signer.verify_hook_token(token, "acedata")
    odd = URLSafeTimedSerializer([NEW], salt=SALT).dumps({"job": "job-1"})
    with pytest.raises(BadHookToken, match="unexpected payload"):
        signer.verify_hook_token(odd, "ttapi")
    other_salt = URLSafeTimedSerializer([NEW], salt="something-else").dumps(["job-1", "ttapi"])
    with pytest.raises(BadHookToken):
        signer.verify_hook_token(other_salt, "ttapi")
