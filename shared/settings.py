"""One settings class for every service, read from the environment and an optional `.env`."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.models import QUEUE_NAME_PATTERN
from shared.queue_selection import QueueSelection

DEFAULT_REDIS_URL = "redis://localhost:6379/0"


class Settings(BaseSettings):
    """Every variable of SPEC section 2; env names are the upper-case field names."""

    model_config = SettingsConfigDict(env_file=".env", env_ignore_empty=True, extra="ignore")

    redis_url: str = DEFAULT_REDIS_URL
    # SPEC section 8: a create is acknowledged (201) only once this many replicas hold it
    # (WAIT, on the connection that wrote it); 503 + Retry-After when they do not in time.
    redis_wait_replicas: int = Field(default=0, ge=0, le=16)
    redis_wait_timeout_ms: int = Field(default=500, ge=1, le=60_000)
    # Where task events are published: "classic" on task_events (SPEC section 6), which a
    # Redis Cluster copies to every node; "sharded" on each queue's own channel (Redis 7
    # SPUBLISH), which stays on the queue's shard; "both" while moving from one to the other
    # (the services then read task_events).
    events_mode: Literal["classic", "sharded", "both"] = "classic"
    # A queue name as every create path checks it: "_global" (the tag of keys that belong to
    # no queue) is none.
    queue_name: str = Field(default="default", pattern=QUEUE_NAME_PATTERN)
    bind_host: str = "127.0.0.1"
    # Host names the api and dashboard answer besides loopback ones while bound to loopback
    # (a local reverse proxy that keeps Host); any other Host is refused (DNS rebinding).
    allowed_hosts: str = ""
    api_port: int = Field(default=8080, ge=1, le=65535)
    dashboard_port: int = Field(default=8081, ge=1, le=65535)
    worker_replicas: int = Field(default=3, ge=0, le=64)
    worker_concurrency: int = Field(default=16, ge=1, le=1000)
    # Queues a worker serves (SPEC section 9): "*", "a,b,c" (strict order) or "a:3,b:1".
    worker_queues: str = "*"
    # The Linux CPU scheduling policy of a worker process (shared/runtime.py): "batch"
    # (SCHED_BATCH: woken by a Redis reply, it does not preempt the process that woke it,
    # often Redis itself), "normal" (SCHED_OTHER, the system default), or "auto": batch
    # while it drains a backlog, normal while it waits for work.
    worker_sched_policy: Literal["auto", "batch", "normal"] = "auto"
    api_keys: str = ""
    api_read_keys: str = ""
    max_body_bytes: int = Field(default=1_048_576, ge=1024)

    smtp_host: str | None = None
    smtp_port: int | None = Field(default=None, ge=1, le=65535)
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_from: str = "Task Queue <no-reply@taskqueue.local>"
    smtp_tls: Literal["starttls", "ssl", "none"] = "starttls"
    smtp_timeout_seconds: float = Field(default=15.0, gt=0)

    webhook_secret: str = ""
    # Webhook tasks sign with their own secret, never WEBHOOK_SECRET: their body is the
    # caller's, so sharing the key would let any task creator forge a completion webhook.
    webhook_task_secret: str = ""
    webhook_allow_private_networks: bool = False
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    webhook_max_attempts: int = Field(default=6, ge=1, le=50)
    notifier_concurrency: int = Field(default=32, ge=1, le=1000)

    retry_backoff_seconds: float = Field(default=2.0, ge=0)
    retry_backoff_max_seconds: float = Field(default=600.0, ge=0)
    task_lease_seconds: float = Field(default=30.0, gt=0)
    # How long before its due time a scheduled task is promoted; the worker that gets it
    # waits for the due time itself, so a burst of due tasks starts on time, not queued.
    schedule_lead_seconds: float = Field(default=0.025, ge=0, le=1.0)
    heartbeat_seconds: float = Field(default=1.0, gt=0)
    dead_after_seconds: float = Field(default=4.0, gt=0)
    shutdown_grace_seconds: float = Field(default=7.0, ge=0)
    instance_name: str = ""
    default_timeout_seconds: float = Field(default=300.0, gt=0)
    image_task_seconds: float = Field(default=3.0, ge=0)
    result_ttl_seconds: int = Field(default=604_800, ge=1)
    task_modules: str = ""
    data_dir: str = "data"
    embedded_redis_port: int = Field(default=6379, ge=1, le=65535)
    dev_smtp_port: int = Field(default=1025, ge=1, le=65535)
    dev_mail_http_port: int = Field(default=8025, ge=1, le=65535)
    log_format: Literal["plain", "json"] = "plain"
    log_level: str = "INFO"
    smtp_connections: int = Field(default=4, ge=1, le=64)  # SMTP sessions one notifier keeps
    # SPEC section 13: the standard OpenTelemetry variables that turn tracing on (shared/
    # tracing.py); an endpoint set means spans are exported over OTLP/HTTP, none means none.
    otel_exporter_otlp_endpoint: str = ""
    otel_exporter_otlp_traces_endpoint: str = ""
    otel_service_name: str = ""  # default: taskqueue-<service>
    otel_sdk_disabled: bool = False
    otel_traces_exporter: str = "otlp"  # "none" turns tracing off, as for the SDK

    @field_validator("redis_url", mode="before")
    @classmethod
    def _normalise_redis_url(cls, value: object) -> object:
        """Accept the seed's bare `host:port` as well as a full URL."""
        if isinstance(value, str) and value and "://" not in value:
            return f"redis://{value}/0"
        return value

    @field_validator("worker_queues")
    @classmethod
    def _check_worker_queues(cls, value: str) -> str:
        QueueSelection.parse(value)  # a typo fails at start, naming what is wrong
        return value

    @property
    def api_key_list(self) -> list[str]:
        return _split(self.api_keys)

    @property
    def api_read_key_list(self) -> list[str]:
        return _split(self.api_read_keys)

    @property
    def allowed_host_list(self) -> list[str]:
        return [host.lower() for host in _split(self.allowed_hosts)]

    @property
    def task_module_list(self) -> list[str]:
        return _split(self.task_modules)


def _split(raw: str) -> list[str]:
    return [part.strip() for part in raw.split(",") if part.strip()]


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, built once on first use (tests build their own)."""
    return Settings()
