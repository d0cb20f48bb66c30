"""Settings, read once from the environment, frozen, and passed down.

Every variable is named in the error that a wrong value raises, so a bad start-up says which setting to fix.
Secrets print as '**********' so that a logged Settings never leaks a key.
"""

from __future__ import annotations

import base64
import re
import secrets as _secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

from receiver.envvalues import Secret as Secret  # the types of Settings' fields, where its users look for them
from receiver.envvalues import SettingsError as SettingsError
from receiver.envvalues import (
    address,
    addresses,
    choice,
    flag,
    number,
    positive,
    url,
    whole,
)
from submitter.providers import PROVIDERS

DEFAULT_PUBLIC_URL = "http://127.0.0.1:8000"
DEFAULT_NGROK_API = "http://127.0.0.1:4040"  # the ngrok agent's web_addr
DEFAULT_CLOUDFLARED_METRICS = tuple(f"127.0.0.1:{port}" for port in range(20241, 20246))  # cloudflared tries each
SEVEN_DAYS = 7 * 24 * 3600
ONE_DAY = 24 * 3600
FIFTEEN_MINUTES = 15 * 60

# How late a callback may be (seconds since the job was sent) before the job is looked up at its provider
# (receiver/reconcile.py); a job still running is asked again later, backing off. Generous on purpose: asking too
# early only finds the job still running. Each is many times the provider's usual time plus its retries:
CALLBACK_GRACE: dict[str, float] = {
    "ttapi": FIFTEEN_MINUTES,  # fast mode ~90 s (TTAPI documents no time); up to 3 deliveries (providers.md §2.5)
    "acedata": FIFTEEN_MINUTES,  # "generation takes ~1-2 min" [S002] (providers.md §3.3); retries undocumented
    "wavespeed": FIFTEEN_MINUTES,  # "30-60 s processing" (providers.md §4.2); retries undocumented
    "apimart": FIFTEEN_MINUTES,  # ~30 s (actual_time 29 in its example) + retries at 10/30/60 s (providers.md §5.4)
}


@dataclass(frozen=True)
class ProviderSettings:
    api_key: Secret | None
    base_url: str
    webhook_secret: Secret | None = None  # for providers that sign callbacks; fetched from the provider when unset
    max_in_flight: int | None = None  # None: the provider's documented limit
    callback_grace: float = FIFTEEN_MINUTES  # seconds a callback may be late before the job is looked up
    give_up_after: float = ONE_DAY  # seconds after sending with no result before the job is failed as lost

    @property
    def simulated(self) -> bool:
        """No key: the built-in simulator stands in for this provider."""
        return self.api_key is None


@dataclass(frozen=True)
class S3Media:
    """REELHOOK_MEDIA_URL=s3://bucket/prefix, and how to reach the bucket (the variables every S3 tool reads)."""

    url: str
    endpoint: str | None = None  # AWS_ENDPOINT_URL: R2, MinIO, SeaweedFS; None for AWS itself
    region: str | None = None  # AWS_REGION (or AWS_DEFAULT_REGION)
    access_key_id: str | None = None  # AWS_ACCESS_KEY_ID; None: obstore's own chain (instance role, ...)
    secret_access_key: Secret | None = None  # AWS_SECRET_ACCESS_KEY
    copy_if_not_exists: str = "multipart"  # AWS_COPY_IF_NOT_EXISTS (storage/media/s3.py says why)


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    public_url: str = DEFAULT_PUBLIC_URL  # where people reach us; callbacks too, unless discover_public_url
    # REELHOOK_PUBLIC_URL=auto (the default once a remote provider has a key): paid jobs' callback base is asked of a
    # local ngrok or cloudflared agent as they leave (receiver/tunnel.py); simulators keep calling back on public_url.
    discover_public_url: bool = False
    ngrok_api: str = DEFAULT_NGROK_API
    cloudflared_metrics: tuple[str, ...] = DEFAULT_CLOUDFLARED_METRICS
    secrets: tuple[Secret, ...] = ()
    api_token: Secret | None = None
    rules_path: Path | None = None
    allow_private_urls: bool = False
    providers: Mapping[str, ProviderSettings] = field(default_factory=dict)
    token_max_age: float = SEVEN_DAYS
    simulator_delay: float = 2.0
    faults: frozenset[str] = frozenset()  # fault-injection points (tests/faults), never set in production
    notify_secret: Secret | None = None  # whsec_… key that signs the rules' notifications
    max_download_bytes: int = 2 * 1024**3  # a larger file is refused, not half-kept
    download_min_rate: int = 32 * 1024  # bytes/s an attempt must average (after a 15 s head start), or it is retried
    download_deadline: float = 600.0  # seconds: no attempt lasts longer, however fast it goes
    download_per_origin: int = 2  # downloads at once from one scheme://host:port, of the 4 slots
    max_hook_requests: int = 256  # callbacks in progress at once; past it /hooks/* answers 503 + Retry-After
    # Slow and idle clients (receiver/connections.py, receiver/deadlines.py). A provider sends a callback's head
    # in one packet and its few-KiB body right after; these bound what a client that does not can hold. A job's
    # callbacks are few and mostly one at a time, but a provider that re-delivers before our answer reaches it
    # sends several at once (tests/e2e/test_flow.py sends 5): 8 leaves room for that, and a leaked token still
    # holds at most 8 of the 256 slots.
    max_hook_requests_per_job: int = 8  # callbacks in progress for one job's token; past it 429 + Retry-After
    header_timeout: float = 10.0  # seconds to send a request's head, on a new or kept-alive connection
    body_timeout: float = 30.0  # seconds to send a request's body once its head is in; then 408 and close
    keep_alive_timeout: float = 5.0  # seconds an idle kept-alive connection stays open
    max_connections: int = 512  # open connections; past it the one idle longest is closed for a new one
    metrics_addr: tuple[str, int] | None = None  # serve /metrics there without a token, and not on the main port
    log_format: str = "text"  # or "json": one object per line (receiver/logs.py)
    log_level: str = "INFO"  # DEBUG adds a line per HTTP request in and out
    database_url: Secret | None = None  # postgresql://…: a database shared by instances (it may hold a password)
    media_s3: S3Media | None = None  # REELHOOK_MEDIA_URL=s3://…; None: the media folder in the data dir

    @property
    def database_path(self) -> Path:
        return self.data_dir / "reelhook.sqlite3"

    @property
    def database(self) -> str:
        """What `storage.open_store` opens: REELHOOK_DATABASE_URL, else the SQLite file in the data dir."""
        return str(self.database_url) if self.database_url is not None else str(self.database_path)

    @property
    def shared_database(self) -> bool:
        """Other instances may use this database (PostgreSQL), so whatever they must agree on cannot be local."""
        return self.database_url is not None

    @property
    def media_dir(self) -> Path:
        return self.data_dir / "media"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        data_dir = Path(environ.get("REELHOOK_DATA_DIR") or "./data").resolve()
        given = (environ.get("REELHOOK_PUBLIC_URL") or "").strip()
        providers = {}
        for name, provider in PROVIDERS.items():
            prefix = f"REELHOOK_{name.upper()}"
            key = environ.get(f"{prefix}_API_KEY") or None
            webhook_secret = environ.get(f"{prefix}_WEBHOOK_SECRET") or None
            max_in_flight = environ.get(f"{prefix}_MAX_IN_FLIGHT") or None
            if max_in_flight is not None and not (max_in_flight.isdigit() and int(max_in_flight) > 0):
                raise SettingsError(f"{prefix}_MAX_IN_FLIGHT must be a whole number above 0, got {max_in_flight!r}")
            providers[name] = ProviderSettings(
                api_key=Secret(key) if key else None,
                base_url=url(environ, f"{prefix}_BASE_URL", provider.default_base_url),
                webhook_secret=Secret(webhook_secret) if webhook_secret else None,
                max_in_flight=int(max_in_flight) if max_in_flight else None,
                callback_grace=number(environ, f"{prefix}_CALLBACK_GRACE", CALLBACK_GRACE.get(name, FIFTEEN_MINUTES)),
                give_up_after=number(environ, f"{prefix}_GIVE_UP_AFTER", ONE_DAY),
            )
        remote = [p for p in providers.values() if not p.simulated and urlsplit(p.base_url).hostname not in LOCAL_HOSTS]
        # With no URL given and a real provider to call us back, the tunnel beside us is asked (receiver/tunnel.py);
        # a key whose base URL is on this machine (a simulator with a key, in tests) keeps the local default.
        discover = given.lower() == "auto" or (not given and bool(remote))
        public_url = DEFAULT_PUBLIC_URL if discover else url(environ, "REELHOOK_PUBLIC_URL", DEFAULT_PUBLIC_URL)
        ngrok_api = url(environ, "REELHOOK_NGROK_API", DEFAULT_NGROK_API)
        cloudflared_metrics = addresses(environ, "REELHOOK_CLOUDFLARED_METRICS", DEFAULT_CLOUDFLARED_METRICS)
        # A discovered URL is checked when it is found (receiver/tunnel.py: APIMart's ports among it).
        if not discover and remote and urlsplit(public_url).hostname in LOCAL_HOSTS:
            raise SettingsError(
                f"REELHOOK_PUBLIC_URL is {public_url}, which a real provider cannot reach: set it to the tunnel's"
                " public https URL, or to auto to ask the tunnel agent (see ngrok.yml)"
            )
        if not discover and providers.get("apimart") in remote and urlsplit(public_url).port not in (None, 80, 443):
            raise SettingsError(
                f"REELHOOK_PUBLIC_URL is {public_url}: APIMart only calls back on ports 80 and 443 (and silently drops"
                " other URLs); use the tunnel's https URL without a port"
            )
        rules = environ.get("REELHOOK_RULES")
        if rules and not Path(rules).is_file():
            raise SettingsError(f"REELHOOK_RULES: no such file: {rules}")
        secret_list = [part.strip() for part in environ.get("REELHOOK_SECRET", "").split(",") if part.strip()]
        if any(len(secret) < 16 for secret in secret_list):
            raise SettingsError("REELHOOK_SECRET: each secret must be at least 16 characters")
        token = environ.get("REELHOOK_API_TOKEN") or None
        notify_secret = environ.get("REELHOOK_NOTIFY_SECRET") or None
        if notify_secret is not None and not _is_webhook_secret(notify_secret):
            raise SettingsError("REELHOOK_NOTIFY_SECRET must be whsec_ followed by base64 (at least 24 bytes)")
        return cls(
            data_dir=data_dir,
            public_url=public_url,
            discover_public_url=discover,
            ngrok_api=ngrok_api,
            cloudflared_metrics=cloudflared_metrics,
            secrets=tuple(Secret(secret) for secret in secret_list),
            api_token=Secret(token) if token else None,
            rules_path=Path(rules).resolve() if rules else None,
            allow_private_urls=flag(environ, "REELHOOK_ALLOW_PRIVATE_URLS"),
            providers=providers,
            token_max_age=number(environ, "REELHOOK_TOKEN_MAX_AGE", SEVEN_DAYS),
            simulator_delay=number(environ, "REELHOOK_SIMULATOR_DELAY", 2.0),
            faults=frozenset(filter(None, environ.get("REELHOOK_FAULTS", "").split(","))),
            notify_secret=Secret(notify_secret) if notify_secret else None,
            max_download_bytes=whole(environ, "REELHOOK_MAX_DOWNLOAD_BYTES", 2 * 1024**3),
            download_min_rate=whole(environ, "REELHOOK_DOWNLOAD_MIN_RATE", 32 * 1024),
            download_deadline=positive(environ, "REELHOOK_DOWNLOAD_DEADLINE", 600.0),
            download_per_origin=whole(environ, "REELHOOK_DOWNLOAD_PER_ORIGIN", 2),
            max_hook_requests=whole(environ, "REELHOOK_MAX_HOOK_REQUESTS", 256),
            max_hook_requests_per_job=whole(environ, "REELHOOK_MAX_HOOK_REQUESTS_PER_JOB", 8),
            header_timeout=positive(environ, "REELHOOK_HEADER_TIMEOUT", 10.0),
            body_timeout=positive(environ, "REELHOOK_BODY_TIMEOUT", 30.0),
            keep_alive_timeout=positive(environ, "REELHOOK_KEEP_ALIVE_TIMEOUT", 5.0),
            max_connections=whole(environ, "REELHOOK_MAX_CONNECTIONS", 512),
            metrics_addr=address(environ, "REELHOOK_METRICS_ADDR"),
            log_format=choice(environ, "REELHOOK_LOG_FORMAT", LOG_FORMATS, "text"),
            log_level=choice(environ, "REELHOOK_LOG_LEVEL", LOG_LEVELS, "INFO"),
            database_url=_database_url(environ, "REELHOOK_DATABASE_URL"),
            media_s3=_media(environ),
        )

    def with_local_secrets(self) -> Settings:
        """Fill in the hook secret and API token from the data dir, generating each once if absent.

        Not with a shared database: instances behind one load balancer must sign and check with the same keys (a
        callback signed by one and delivered to another would be refused), so each must be given.
        """
        if self.shared_database:
            missing = [
                name
                for name, value in (
                    ("REELHOOK_SECRET", self.secrets),
                    ("REELHOOK_API_TOKEN", self.api_token),
                    ("REELHOOK_NOTIFY_SECRET", self.notify_secret),
                )
                if not value
            ]
            if missing:
                raise SettingsError(
                    f"REELHOOK_DATABASE_URL is a database that several instances share, so their secrets must be the"
                    f" same and cannot be generated into each one's data dir: set {', '.join(missing)}"
                )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        secrets = self.secrets or (Secret(_stored_secret(self.data_dir / "secret")),)
        api_token = self.api_token or Secret(_stored_secret(self.data_dir / "api-token"))
        notify = self.notify_secret or Secret(_stored_secret(self.data_dir / "notify-secret", _new_webhook_secret))
        return replace(self, secrets=secrets, api_token=api_token, notify_secret=notify)


LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "0.0.0.0"}


def _new_webhook_secret() -> str:
    return "whsec_" + base64.b64encode(_secrets.token_bytes(32)).decode()


def _is_webhook_secret(value: str) -> bool:
    try:
        return value.startswith("whsec_") and len(base64.b64decode(value[6:], validate=True)) >= 24
    except ValueError:
        return False


def _stored_secret(path: Path, make: Callable[[], str] = lambda: _secrets.token_urlsafe(32)) -> str:
    if path.exists():
        return path.read_text().strip()
    value = make()
    path.touch(mode=0o600)
    path.write_text(value + "\n")
    return value


def _database_url(environ: Mapping[str, str], name: str) -> Secret | None:
    value = environ.get(name, "").strip()
    if not value:
        return None  # the SQLite file in the data dir
    parts = urlsplit(value)
    if parts.scheme not in ("postgresql", "postgres"):
        shown = f"{parts.scheme}://…" if parts.scheme else "a value that is not a URL"
        raise SettingsError(
            f"{name} must be a postgresql:// URL (such as postgresql://reelhook:password@db.example/reelhook), got"
            f" {shown}; leave it unset for the SQLite file in REELHOOK_DATA_DIR"
        )
    return Secret(value)


LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def _media(environ: Mapping[str, str]) -> S3Media | None:
    raw = (environ.get("REELHOOK_MEDIA_URL") or "").strip()
    if not raw:
        return None
    parts = urlsplit(raw)
    prefix = parts.path.strip("/")
    segments = prefix.split("/") if prefix else []
    if (
        parts.scheme != "s3"
        or not _BUCKET.fullmatch(parts.netloc)
        or parts.query
        or parts.fragment
        or any(segment in ("", ".", "..") for segment in segments)
    ):
        raise SettingsError(
            "REELHOOK_MEDIA_URL must be s3://bucket/prefix (a bucket name of 3-63 lowercase letters, digits, dots"
            f" and hyphens, then an optional prefix), or unset for the media folder in the data dir; got {raw!r}"
        )
    endpoint = environ.get("AWS_ENDPOINT_URL") or None
    if endpoint is not None:
        endpoint = url(environ, "AWS_ENDPOINT_URL", endpoint)
    key_id = environ.get("AWS_ACCESS_KEY_ID") or None
    secret = environ.get("AWS_SECRET_ACCESS_KEY") or None
    if (key_id is None) != (secret is None):
        raise SettingsError("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set together (for REELHOOK_MEDIA_URL)")
    return S3Media(
        url=f"s3://{parts.netloc}/{prefix}" if prefix else f"s3://{parts.netloc}",
        endpoint=endpoint,
        region=environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or None,
        access_key_id=key_id,
        secret_access_key=Secret(secret) if secret else None,
        copy_if_not_exists=environ.get("AWS_COPY_IF_NOT_EXISTS") or "multipart",
    )
