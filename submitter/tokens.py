"""Hook tokens: the unguessable path segment that makes a callback URL belong to exactly one job.

The token is an itsdangerous timed signature over (job id, provider). A callback is accepted only on the route of
its own provider, for its own job, while the token is unexpired. Secrets form a list: new tokens are signed with the
first, and a token signed with any of them is accepted, so a secret can be rotated without losing jobs in flight.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from itsdangerous import BadData, URLSafeTimedSerializer

SALT = "reelhook.hook"


class BadHookToken(Exception):
    """The token is forged, expired, or for another provider."""


@dataclass(frozen=True)
class HookClaim:
    job_id: str
    provider: str


class HookSigner:
    def __init__(self, secrets: Sequence[str], *, max_age: float) -> None:
        if not secrets:
            raise ValueError("HookSigner needs at least one secret")
        # itsdangerous signs with the last key and verifies with all of them.
        self._serializer = URLSafeTimedSerializer(list(reversed(secrets)), salt=SALT)
        self._max_age = max_age

    def sign_hook_token(self, job_id: str, provider: str) -> str:
        return self._serializer.dumps([job_id, provider])

    def verify_hook_token(self, token: str, provider: str) -> HookClaim:
        if not token.isascii():  # tokens are URL-safe base64; a lone surrogate would not even encode to check
            raise BadHookToken("invalid hook token: not ASCII")
        try:
            payload = self._serializer.loads(token, max_age=int(self._max_age))
        except BadData as exc:
            raise BadHookToken(f"invalid hook token: {type(exc).__name__}") from None
        if not (isinstance(payload, list) and len(payload) == 2 and all(isinstance(part, str) for part in payload)):
            raise BadHookToken("invalid hook token: unexpected payload")
        job_id, signed_for = payload
        if signed_for != provider:
            raise BadHookToken(f"hook token is for provider {signed_for!r}, not {provider!r}")
        return HookClaim(job_id=job_id, provider=provider)
