"""Configuration: one option table drives flags, ``GUARDWIRE_*`` env vars and the YAML file.

Precedence: command-line flag > environment variable > config file > default. Everything is
resolved and validated once, at start-up, into a frozen ``Settings``; errors name the key and
where the bad value came from. Nothing reads ``os.environ`` at import time.

Each option ``foo_bar`` is ``--foo-bar`` on the command line, ``GUARDWIRE_FOO_BAR`` in the
environment and ``foo_bar:`` at the top level of the YAML file.

Structured, file-only keys (``FILE_ONLY_KEYS``): ``policies:`` -- named policies, parsed and
validated by ``guardwire_server.policies`` into ``Settings.policies``; the file's path is kept in
``Settings.config_file`` so the server can reload them (SIGHUP, or the file changing).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

__all__ = ["OPTIONS", "ConfigError", "Option", "RequestLimits", "Settings", "resolve_settings"]


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key and its source."""


def _bool(text: str) -> bool:
    low = text.strip().lower()
    if low in {"1", "true", "yes", "on"}:
        return True
    if low in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"expected a boolean (true/false), got {text!r}")


def _str_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


@dataclass(frozen=True, slots=True)
class Option:
    key: str
    type: Callable[[str], Any]
    default: Any
    help: str
    check: Callable[[Any], str | None] | None = None  # returns an error text or None
    choices: tuple[str, ...] | None = None
    secret: bool = False


def _positive(v: Any) -> str | None:
    return None if v > 0 else "must be > 0"


def _non_negative(v: Any) -> str | None:
    return None if v >= 0 else "must be >= 0"


def _unit_open(v: Any) -> str | None:
    return None if 0.0 < v <= 1.0 else "must be in (0, 1]"


def _unit(v: Any) -> str | None:
    return None if 0.0 <= v <= 1.0 else "must be in [0, 1]"


def _listen(v: Any) -> str | None:
    if not v:
        return "needs at least one address"
    for addr in v:
        if not addr.startswith("unix:") and ":" not in addr:
            return f"{addr!r} is neither host:port nor unix:PATH"
    return None


def _endpoint(v: Any) -> str | None:
    if not v or v.startswith(("http://", "https://")) or ":" in v:
        return None
    return "must be http(s)://host:port or host:port"


def _nonempty(v: Any) -> str | None:
    return None if v.strip() else "must not be empty"


def _socket_mode(raw: Any) -> str:
    """Permission bits, normalized to four octal digits ("0640").

    A string ("0640", "640", "0o640": from a flag, the environment or a quoted YAML value) is
    octal. A YAML integer is the number YAML read: unquoted ``0640`` is YAML 1.1's octal
    literal, i.e. 416 == 0o640, so it is taken as the mode itself (and unquoted ``640``, the
    decimal 640, is out of range rather than silently becoming another mode)."""
    if isinstance(raw, bool):
        raise ValueError(f"expected octal permission bits such as 0600 or 0660, got {raw!r}")
    if isinstance(raw, int):
        mode = raw
    else:
        text = str(raw).strip().lower().removeprefix("0o")
        try:
            mode = int(text, 8)
        except ValueError:
            raise ValueError(
                f"expected octal permission bits such as 0600 or 0660, got {raw!r}"
            ) from None
    if not 0 <= mode <= 0o777:
        raise ValueError(
            f"expected octal permission bits in [0000, 0777], got {raw!r} (quote the value in "
            'YAML: unquoted 640 is the decimal number 640; write "0640")'
        )
    return f"{mode:04o}"


def _not_world_writable(v: Any) -> str | None:
    return "must not be world-writable (o+w): anyone could connect" if int(v, 8) & 0o002 else None


def _port(v: Any) -> str | None:
    return None if 0 <= v <= 65535 else "must be a TCP port in [0, 65535]"


OPTIONS: tuple[Option, ...] = (
    Option("model", str, "", "Model directory or Hugging Face hub id (required unless --demo)."),
    Option("revision", str, "", "Hub revision (branch, tag or commit) of the model."),
    Option("family", str, "auto", "Guard-model family; 'auto' detects it from the model dir."),
    Option("backend", str, "torch", "Inference backend.", choices=("torch", "onnxruntime", "fake")),
    Option("device", str, "auto", "'auto' (CUDA if present, else CPU), 'cpu', 'cuda', 'cuda:N'."),
    Option(
        "dtype",
        str,
        "auto",
        "Weights dtype; 'auto' = bfloat16 on CUDA, float32 on CPU.",
        choices=("auto", "float32", "bfloat16", "float16"),
    ),
    Option("threads", int, 0, "CPU threads for inference (0 = library default).", _non_negative),
    Option(
        "listen",
        _str_list,
        ["127.0.0.1:50051"],
        "Comma-separated addresses: host:port and/or unix:/path/to.sock.",
        _listen,
    ),
    Option("max_batch_size", int, 16, "Most requests in one model batch.", _positive),
    Option("max_batch_tokens", int, 8192, "Most padded tokens in one batch.", _positive),
    Option(
        "max_wait_ms",
        float,
        5.0,
        "Longest wait for a batch to fill after its first request.",
        _positive,
    ),
    Option("max_queue", int, 256, "Most queued requests; more get RESOURCE_EXHAUSTED.", _positive),
    Option(
        "max_streams",
        int,
        256,
        "Most open StreamClassify streams; more get RESOURCE_EXHAUSTED.",
        _positive,
    ),
    Option(
        "max_pending_checks",
        int,
        8,
        "Most unanswered checks per stream before the server stops reading it (flow control).",
        _positive,
    ),
    Option("max_turns", int, 64, "Most turns in a conversation.", _positive),
    Option("max_conversation_bytes", int, 65536, "Most UTF-8 bytes of all turns.", _positive),
    Option("max_prompt_tokens", int, 8192, "Most prompt tokens (policy + turns).", _positive),
    Option("max_categories", int, 32, "Most categories in a custom policy.", _positive),
    Option("threshold", float, 0.5, "Default unsafe-score threshold.", _unit_open),
    Option(
        "thresholds_file",
        str,
        "",
        'Per-category thresholds written by `guardwire calibrate` ("" = off); used when a '
        "request sets no threshold.",
    ),
    Option(
        "category_threshold",
        float,
        0.3,
        "Conditional probability above which a further category is reported violated.",
        _unit,
    ),
    Option(
        "prefix_cache_mb",
        int,
        512,
        "Memory bound of the policy-prefix KV cache (0 = off).",
        _non_negative,
    ),
    Option(
        "verdict_cache_entries",
        int,
        0,
        "Most entries of the verdict cache: identical requests (model, policy, conversation) "
        "within verdict_cache_ttl_s are answered without inference (0 = off; keys are keyed "
        "hashes, never text).",
        _non_negative,
    ),
    Option(
        "verdict_cache_ttl_s",
        float,
        60.0,
        "Seconds a verdict-cache entry stays valid.",
        _positive,
    ),
    Option(
        "prioritize_prompts",
        _bool,
        True,
        "Batch checks of user turns (prompts) before checks of assistant responses.",
    ),
    Option(
        "min_verdict_mass",
        float,
        0.5,
        "Load probe: least P(safe)+P(unsafe) at the verdict position to accept the model.",
        _unit,
    ),
    Option(
        "drain_grace_s", float, 20.0, "Seconds to finish in-flight work on SIGTERM.", _non_negative
    ),
    Option(
        "drain_quiet_s",
        float,
        0.3,
        "On drain, keep answering new calls with UNAVAILABLE until none arrived for this long "
        "(at most 10x as long, within drain_grace_s) before closing the port: gRPC cancels "
        "calls that race the close.",
        _non_negative,
    ),
    Option("reflection", _bool, True, "Serve gRPC server reflection."),
    # -- reliability and security (health_monitor, transport, README) ----------------------
    Option(
        "max_concurrent_rpcs",
        int,
        0,
        "Hard cap on RPCs the gRPC core handles at once, health checks included; more get "
        "RESOURCE_EXHAUSTED before any parsing (0 = auto: 2*(max_queue+max_streams)+64).",
        _non_negative,
    ),
    Option(
        "inference_timeout_s",
        float,
        30.0,
        "Watchdog: a batch whose inference runs longer (and longer than 4x its expected time "
        "from the measured speed) fails with BACKEND_FAILURE and the backend counts as "
        "unhealthy until the call returns (0 = off).",
        _non_negative,
    ),
    Option(
        "unhealthy_after_failures",
        int,
        3,
        "Consecutive failed batches after which health turns NOT_SERVING (until a batch or "
        "the background recovery probe succeeds).",
        _positive,
    ),
    Option(
        "recovery_probe_s",
        float,
        1.0,
        "First delay of the background recovery probe while unhealthy (doubles, at most 30 s).",
        _positive,
    ),
    Option(
        "truncate",
        str,
        "reject",
        "Conversations over max_prompt_tokens: 'reject' (INVALID_ARGUMENT) or "
        "'drop_oldest_turns' (oldest turns dropped, reported in truncated_turns).",
        choices=("reject", "drop_oldest_turns"),
    ),
    Option(
        "tls_cert_file", str, "", 'PEM server certificate chain for TCP listeners ("" = plaintext).'
    ),
    Option("tls_key_file", str, "", "PEM private key of tls_cert_file."),
    Option(
        "tls_client_ca_file",
        str,
        "",
        "PEM CA bundle; when set, clients must present a certificate it signed (mutual TLS).",
    ),
    Option(
        "auth_token_file",
        str,
        "",
        'File holding a bearer token every call must send as "authorization: Bearer <token>" '
        '(health checks exempt; "" = off).',
        secret=True,
    ),
    Option(
        "unix_socket_mode",
        _socket_mode,
        "0660",
        "Permission bits of unix: listen sockets (octal; chmod after bind; never o+w).",
        _not_world_writable,
    ),
    Option("log_level", str, "info", "Log level.", choices=("debug", "info", "warning", "error")),
    Option(
        "log_conversations",
        _bool,
        False,
        "Log conversation text (user data!) at debug level. Off by default.",
    ),
    Option(
        "otel_enabled",
        _bool,
        False,
        "OpenTelemetry traces and metrics (needs `pip install 'guardwire[otel]'`).",
    ),
    Option(
        "otel_endpoint",
        str,
        "",
        'OTLP/gRPC collector, e.g. http://127.0.0.1:4317 ("" = no OTLP export).',
        _endpoint,
    ),
    Option(
        "otel_service_name", str, "guardwire", "service.name resource of the telemetry.", _nonempty
    ),
    Option(
        "prometheus_port",
        int,
        0,
        "Port of the Prometheus /metrics endpoint when otel_enabled (0 = off).",
        _port,
    ),
    Option(
        "trace_conversations",
        _bool,
        False,
        "Put conversation text (user data!) in trace spans. Off by default.",
    ),
)

_BY_KEY = {o.key: o for o in OPTIONS}
FILE_ONLY_KEYS = ("policies",)


@dataclass(frozen=True, slots=True)
class RequestLimits:
    max_turns: int
    max_conversation_bytes: int
    max_prompt_tokens: int
    max_categories: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    model: str
    revision: str
    family: str
    backend: str
    device: str
    dtype: str
    threads: int
    listen: tuple[str, ...]
    max_batch_size: int
    max_batch_tokens: int
    max_wait_ms: float
    max_queue: int
    max_streams: int
    max_pending_checks: int
    max_turns: int
    max_conversation_bytes: int
    max_prompt_tokens: int
    max_categories: int
    threshold: float
    thresholds_file: str
    category_threshold: float
    prefix_cache_mb: int
    verdict_cache_entries: int
    verdict_cache_ttl_s: float
    prioritize_prompts: bool
    min_verdict_mass: float
    drain_grace_s: float
    drain_quiet_s: float
    reflection: bool
    log_level: str
    log_conversations: bool
    otel_enabled: bool
    otel_endpoint: str
    otel_service_name: str
    prometheus_port: int
    trace_conversations: bool
    max_concurrent_rpcs: int
    inference_timeout_s: float
    unhealthy_after_failures: int
    recovery_probe_s: float
    truncate: str
    tls_cert_file: str
    tls_key_file: str
    tls_client_ca_file: str
    auth_token_file: str
    unix_socket_mode: str
    sources: Mapping[str, str] = field(default_factory=dict)  # key -> "flag"/"env"/"file"/"default"
    # guardwire_server.policies.PolicyDef, from the file's `policies:`
    policies: tuple[Any, ...] = ()
    config_file: str = ""  # the YAML file the settings came from ("" = none)

    @property
    def max_message_bytes(self) -> int:
        """The largest request message the server parses (derived, not an option): bigger ones
        answer INVALID_ARGUMENT / LIMIT_EXCEEDED (``guardwire_server.interceptors``)."""
        return max(4 * 2**20, 4 * self.max_conversation_bytes)

    @property
    def request_limits(self) -> RequestLimits:
        return RequestLimits(
            max_turns=self.max_turns,
            max_conversation_bytes=self.max_conversation_bytes,
            max_prompt_tokens=self.max_prompt_tokens,
            max_categories=self.max_categories,
        )

    def redacted(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name in ("sources", "policies"):
                continue
            opt = _BY_KEY.get(f.name)
            value = getattr(self, f.name)
            out[f.name] = "***" if opt is not None and opt.secret and value else value
        return out


def add_flags(parser: argparse.ArgumentParser) -> None:
    """Adds one flag per option; their defaults are None so unset flags are detectable."""
    for o in OPTIONS:
        extra: dict[str, Any] = {}
        if o.choices:
            extra["choices"] = o.choices
        parser.add_argument(
            "--" + o.key.replace("_", "-"),
            dest=o.key,
            default=None,
            help=f"{o.help} [env GUARDWIRE_{o.key.upper()}; default {o.default!r}]",
            **extra,
        )
    parser.add_argument("--config", default=None, help="YAML config file [env GUARDWIRE_CONFIG].")


def _coerce(o: Option, raw: Any, source: str) -> Any:
    try:
        if isinstance(raw, str):
            value = o.type(raw)
        elif o.type is _str_list:
            value = [str(x) for x in (raw if isinstance(raw, list) else [raw])]
        elif o.type is _bool:
            if not isinstance(raw, bool):
                raise ValueError(f"expected a boolean, got {raw!r}")
            value = raw
        elif o.type is _socket_mode:
            value = _socket_mode(raw)
        elif o.type in (int, float):
            if isinstance(raw, bool) or not isinstance(raw, int | float):
                raise ValueError(f"expected a number, got {raw!r}")
            if o.type is int and float(raw) != int(raw):
                raise ValueError(f"expected an integer, got {raw!r}")
            value = o.type(raw)
        else:
            value = o.type(str(raw))
    except ValueError as exc:
        raise ConfigError(f"{o.key} (from {source}): {exc}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{o.key} (from {source}): must be a finite number (got {value!r})")
    if o.choices and value not in o.choices:
        raise ConfigError(f"{o.key} (from {source}): {value!r} is not one of {list(o.choices)}")
    if o.check is not None:
        problem = o.check(value)
        if problem:
            raise ConfigError(f"{o.key} (from {source}): {problem} (got {value!r})")
    return value


def load_config_file(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {p} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p}: top level must be a mapping")
    return data


def resolve_settings(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    file_data: Mapping[str, Any] | None = None,
    *,
    file_keys_extra: Sequence[str] = (),
) -> Settings:
    """Merges the four layers. Unknown keys in the file are errors (a typo must not be ignored)."""
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    env = env or {}
    file_data = dict(file_data or {})
    unknown = sorted(set(file_data) - set(_BY_KEY) - set(FILE_ONLY_KEYS) - set(file_keys_extra))
    if unknown:
        raise ConfigError(f"config file: unknown key(s) {unknown}; known: {sorted(_BY_KEY)}")
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for o in OPTIONS:
        env_name = "GUARDWIRE_" + o.key.upper()
        if o.key in flags:
            values[o.key] = _coerce(o, flags[o.key], f"--{o.key.replace('_', '-')}")
            sources[o.key] = "flag"
        elif env_name in env:
            values[o.key] = _coerce(o, env[env_name], env_name)
            sources[o.key] = "env"
        elif o.key in file_data:
            values[o.key] = _coerce(o, file_data[o.key], "config file")
            sources[o.key] = "file"
        else:
            values[o.key] = o.default
            sources[o.key] = "default"
    values["listen"] = tuple(values["listen"])
    # a local import: guardwire_server.policies imports this module
    from guardwire_server.policies import parse_policies

    policies = parse_policies(file_data.get("policies"))
    config_file = str(flags.get("config") or env.get("GUARDWIRE_CONFIG") or "")
    return Settings(**values, sources=sources, policies=policies, config_file=config_file)
