"""Settings: parsed and validated once, at start, then frozen.

Sources, highest precedence first:

1. command-line flags (``edgeproxy serve --upstream …``),
2. environment variables ``EDGEPROXY_<KEY>`` (upper-cased key, e.g.
   ``EDGEPROXY_UPSTREAM``, ``EDGEPROXY_TRUST_PROXY=10.0.0.0/8,192.168.0.0/16``),
3. the TOML file given by ``--config`` / ``EDGEPROXY_CONFIG`` (flat keys, as
   named below, e.g. ``upstream = "http://shop:8080"``),
4. the ``DEFAULT_*`` constants below.

A bad value raises ``SettingsError`` naming the key and the value; an unknown
TOML key is an error too (a typo must not silently become a default).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import secrets
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import SettingsError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_ADMIN_HOST = "127.0.0.1"
DEFAULT_ADMIN_PORT = 9000
DEFAULT_SLOTS_DIR = "slots"
DEFAULT_WORKERS = 1

# Upstream timeouts, seconds.  connect → 502; no response head within
# first_byte, or no body bytes for idle → 504 (nginx: proxy_connect_timeout,
# proxy_read_timeout).
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_FIRST_BYTE_TIMEOUT = 30.0
DEFAULT_IDLE_TIMEOUT = 60.0
DEFAULT_UPSTREAM_CONNECTIONS = 256

# Personalisation budget per request (classify + choose + rewrite, CPU time
# of the proxy's thread, never the origin's time), ms.  Past it, remaining
# slots keep the origin's bytes.  0 disables the budget.
DEFAULT_BUDGET_MS = 10.0
# Decoded HTML above this size streams through unchanged.
DEFAULT_MAX_REWRITE_BYTES = 8 * 1024 * 1024
# A single slot's body above this size is left untouched.
DEFAULT_MAX_SLOT_BYTES = 512 * 1024
# A variant fragment above this size is rejected at load.
DEFAULT_MAX_FRAGMENT_BYTES = 64 * 1024
# How often slots/ is checked for changes, seconds.
DEFAULT_RELOAD_INTERVAL = 1.0
# Graceful shutdown: how long SIGTERM waits for in-flight requests, seconds.
DEFAULT_DRAIN_TIMEOUT = 25.0
# The traffic port's HTTP/1.1 server: "protocols" (asyncio Protocols on
# llhttp, edgeproxy/http/) or "aiohttp" (aiohttp's low-level web.Server).
DEFAULT_TRAFFIC_SERVER = "protocols"
# Requests to the origin: "protocols" (a keep-alive pool of asyncio Protocols
# on llhttp, edgeproxy/http/upstream.py) or "aiohttp" (one ClientSession).
DEFAULT_UPSTREAM_CLIENT = "protocols"
# Client deadlines, seconds (0: none): a request head must arrive whole
# within header_timeout of the connection or of its first byte (HAProxy's
# `timeout http-request`; 408 and close); an idle keep-alive connection is
# closed after keepalive_timeout (nginx's keepalive_timeout).
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_KEEPALIVE_TIMEOUT = 75.0
# A request body that sends nothing for this long gets a 408 (seconds, 0: none).
DEFAULT_BODY_TIMEOUT = 30.0
# A client that reads none of its response for this long (the send buffer
# stays full) is cut off (seconds, 0: none; nginx's send_timeout): else it
# holds an in-flight slot and an origin connection for as long as it likes.
DEFAULT_SEND_TIMEOUT = 60.0
# Overload (per worker, 0: no cap): past max_connections open connections a
# new one gets a 503 and is closed; past max_in_flight requests being handled
# a new request gets a 503, both with Retry-After: retry_after seconds.
DEFAULT_MAX_CONNECTIONS = 10_000
DEFAULT_MAX_IN_FLIGHT = 1_000
DEFAULT_RETRY_AFTER = 1
# Queueing-delay shedding (edgeproxy/http/admission.py, CoDel's rule): while
# the event loop runs timers more than queue_delay_target_ms late for a whole
# queue_delay_interval_ms, new requests get the same 503 (the process is short
# of CPU; work is waiting where max_in_flight cannot see it).  0: off.
DEFAULT_QUEUE_DELAY_TARGET_MS = 20.0
DEFAULT_QUEUE_DELAY_INTERVAL_MS = 100.0
# The in-flight cap adapts (AIMD on the event loop's lag: admission.InFlightLimit)
# between min_in_flight and max_in_flight, keeping the loop less than
# in_flight_lag_target_ms late: admitted requests keep their latency at any
# load; the rest get the 503.  0: a fixed cap at max_in_flight.
DEFAULT_IN_FLIGHT_LAG_TARGET_MS = 2.0
# Never below 16: a few requests in flight are normal load, not overload (at
# 4, an open-loop load at 70 % of capacity on a shared box got 503s when a
# neighbour delayed the loop: the load-test smoke caught it).
DEFAULT_MIN_IN_FLIGHT = 16
# Connections the kernel may hold unaccepted on the traffic port (listen(2)
# backlog; nginx's default).  Also capped by net.core.somaxconn.
DEFAULT_BACKLOG = 511
# Request limits: header block (431), request target (414), body (413;
# 0: none); the conversion beacon's body has its own small cap.
DEFAULT_MAX_HEADER_BYTES = 32 * 1024
DEFAULT_MAX_HEADERS = 100
DEFAULT_MAX_TARGET_BYTES = 8 * 1024
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
DEFAULT_BEACON_MAX_BODY_BYTES = 4 * 1024
# The pseudonym in the Via header added both ways (RFC 9110 §7.6.3); "" adds none.
DEFAULT_VIA = "edgeproxy"

DEFAULT_COOKIE_VISITOR = "edge_vid"
DEFAULT_COOKIE_SESSION = "edge_ses"
DEFAULT_COOKIE_AFFINITY = "edge_aff"
DEFAULT_COOKIE_CAP = "edge_cap"
DEFAULT_AFFINITY_PATTERNS = ("/c/{category}", "/collections/{category}")

# In-memory upstream cache (issue "latency budget"): bytes, 0 disables.
DEFAULT_CACHE_BYTES = 64 * 1024 * 1024
DEFAULT_RENDER_CACHE_KEYS_PER_URL = 64
# Rendered (rewritten + re-encoded) pages of cached origin bodies: bytes, 0 disables.
DEFAULT_RENDER_CACHE_BYTES = 32 * 1024 * 1024

# The access log (CONTRACT §6, edgeproxy/accesslog.py): where ("stdout",
# "stderr", "off" or a file path), how ("auto" = text on a terminal, JSON
# otherwise), which lines (info = every request, warning = 4xx and fail-open,
# error = 5xx and aborted), the share of info lines kept, and how the client
# address appears (truncate = its /24 or /48, hash = keyed HMAC, off).
DEFAULT_ACCESS_LOG = "stdout"
DEFAULT_ACCESS_LOG_FORMAT = "auto"
DEFAULT_ACCESS_LOG_LEVEL = "info"
DEFAULT_ACCESS_LOG_SAMPLE = 1.0
DEFAULT_ACCESS_LOG_CLIENT = "truncate"

ENV_PREFIX = "EDGEPROXY_"


def _parse_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off", ""}:
        return False
    raise SettingsError(key, value, "expected true or false")


def _parse_int(key: str, value: Any, lo: int, hi: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise SettingsError(key, value, "expected an integer") from None
    if isinstance(value, bool) or not lo <= number <= hi:
        raise SettingsError(key, value, f"expected an integer from {lo} to {hi}")
    return number


def _parse_float(key: str, value: Any, lo: float, hi: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SettingsError(key, value, "expected a number") from None
    if isinstance(value, bool) or not lo <= number <= hi:
        raise SettingsError(key, value, f"expected a number from {lo:g} to {hi:g}")
    return number


def _parse_list(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return tuple(str(part) for part in value)


def _parse_url(key: str, value: Any) -> str:
    text = str(value).strip()
    parts = urlsplit(text)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise SettingsError(key, value, "expected an absolute http:// or https:// URL")
    if parts.query or parts.fragment:
        raise SettingsError(key, value, "the upstream URL takes no query or fragment")
    return text.rstrip("/")


def _parse_networks(key: str, value: Any) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    nets = []
    for item in _parse_list(value):
        try:
            nets.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise SettingsError(key, item, "expected an IP network in CIDR form, e.g. 10.0.0.0/8") from None
    return tuple(nets)


def _parse_header_name(key: str, value: Any) -> str | None:
    if value in (None, ""):
        return None
    text = str(value).strip()
    if not text or any(c in text for c in " :\t\r\n") or not text.isascii():
        raise SettingsError(key, value, "expected an HTTP header name")
    return text


def _parse_cookie_name(key: str, value: Any) -> str:
    text = str(value).strip()
    if not text or not text.isascii() or any(c in text for c in ' ;,="\t\r\n()<>@:\\/[]?{}'):
        raise SettingsError(key, value, "expected a cookie name (token characters only)")
    return text


def _parse_optional_cookie(key: str, value: Any) -> str | None:
    return None if value in (None, "") else _parse_cookie_name(key, value)


def _parse_log_target(key: str, value: Any) -> str:
    """``stdout``, ``stderr``, ``off`` or a file path; booleans (and the old
    ``access_log = true``) mean stdout / off."""
    if isinstance(value, bool):
        return DEFAULT_ACCESS_LOG if value else "off"
    text = str(value).strip()
    lower = text.lower()
    if lower in {"stdout", "-", "1", "true", "yes", "on"}:
        return "stdout"
    if lower == "stderr":
        return "stderr"
    if lower in {"off", "0", "false", "no", "none", ""}:
        return "off"
    if text.endswith("/") or Path(text).expanduser().is_dir():
        raise SettingsError(key, value, "expected stdout, stderr, off or a file path (this is a folder)")
    return text


def _parse_path(key: str, value: Any) -> Path | None:
    if value in (None, ""):
        return None
    return Path(str(value)).expanduser()


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """Everything the proxy is configured with.  Frozen: built once."""

    upstream: str = ""
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    admin_host: str = DEFAULT_ADMIN_HOST
    admin_port: int = DEFAULT_ADMIN_PORT
    slots: Path = Path(DEFAULT_SLOTS_DIR)
    geo_db: Path | None = None
    geo_header: str | None = None
    trust_proxy: tuple[Any, ...] = ()
    preview_token: str | None = None
    exposure_log: Path | None = None
    conversion_log: Path | None = None
    conversion_path: tuple[str, ...] = ()
    holdout: float = 0.0
    workers: int = DEFAULT_WORKERS

    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    first_byte_timeout: float = DEFAULT_FIRST_BYTE_TIMEOUT
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    upstream_connections: int = DEFAULT_UPSTREAM_CONNECTIONS
    budget_ms: float = DEFAULT_BUDGET_MS
    max_rewrite_bytes: int = DEFAULT_MAX_REWRITE_BYTES
    max_slot_bytes: int = DEFAULT_MAX_SLOT_BYTES
    max_fragment_bytes: int = DEFAULT_MAX_FRAGMENT_BYTES
    reload_interval: float = DEFAULT_RELOAD_INTERVAL
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    traffic_server: str = DEFAULT_TRAFFIC_SERVER
    upstream_client: str = DEFAULT_UPSTREAM_CLIENT
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    send_timeout: float = DEFAULT_SEND_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    retry_after: int = DEFAULT_RETRY_AFTER
    queue_delay_target_ms: float = DEFAULT_QUEUE_DELAY_TARGET_MS
    queue_delay_interval_ms: float = DEFAULT_QUEUE_DELAY_INTERVAL_MS
    in_flight_lag_target_ms: float = DEFAULT_IN_FLIGHT_LAG_TARGET_MS
    min_in_flight: int = DEFAULT_MIN_IN_FLIGHT
    backlog: int = DEFAULT_BACKLOG
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    max_headers: int = DEFAULT_MAX_HEADERS
    max_target_bytes: int = DEFAULT_MAX_TARGET_BYTES
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    beacon_max_body_bytes: int = DEFAULT_BEACON_MAX_BODY_BYTES
    via: str = DEFAULT_VIA

    cookie_visitor: str = DEFAULT_COOKIE_VISITOR
    cookie_session: str = DEFAULT_COOKIE_SESSION
    cookie_affinity: str = DEFAULT_COOKIE_AFFINITY
    cookie_cap: str = DEFAULT_COOKIE_CAP
    # HMAC key for the proxy's cookies; random per start when unset (then a
    # restart makes every visitor "new" again: set it in production).
    cookie_secret: str = ""
    customer_cookie: str | None = None
    logged_in_cookie: str | None = None
    cart_cookie: str | None = None
    consent_cookie: str | None = None
    consent_value: str = "granted"
    affinity_patterns: tuple[str, ...] = DEFAULT_AFFINITY_PATTERNS

    cache_bytes: int = DEFAULT_CACHE_BYTES
    render_cache_keys_per_url: int = DEFAULT_RENDER_CACHE_KEYS_PER_URL
    render_cache_bytes: int = DEFAULT_RENDER_CACHE_BYTES
    access_log: str = DEFAULT_ACCESS_LOG
    access_log_format: str = DEFAULT_ACCESS_LOG_FORMAT
    access_log_level: str = DEFAULT_ACCESS_LOG_LEVEL
    access_log_sample: float = DEFAULT_ACCESS_LOG_SAMPLE
    access_log_client: str = DEFAULT_ACCESS_LOG_CLIENT
    log_level: str = "info"

    @property
    def budget_s(self) -> float:
        return self.budget_ms / 1000.0


def _parse_via(key: str, value: Any) -> str:
    text = str(value).strip()
    # A Via pseudonym is a token (RFC 9110 §7.6.3): nothing that could end the header.
    if text and not all(c.isalnum() or c in "!#$%&'*+-.^_`|~" for c in text):
        raise SettingsError(key, value, "expected a token such as edgeproxy (letters, digits, - . _), or empty for none")
    return text


# key → parser(key, raw) -> value.  Keys are the TOML names; the env name is
# EDGEPROXY_<KEY upper-cased>; the flag is --<key with - for _>.
_PARSERS: dict[str, Any] = {
    "upstream": _parse_url,
    "host": lambda k, v: str(v),
    "port": lambda k, v: _parse_int(k, v, 0, 65535),
    "admin_host": lambda k, v: str(v),
    "admin_port": lambda k, v: _parse_int(k, v, 0, 65535),
    "slots": lambda k, v: Path(str(v)).expanduser(),
    "geo_db": _parse_path,
    "geo_header": _parse_header_name,
    "trust_proxy": _parse_networks,
    "preview_token": lambda k, v: (str(v) or None) if v is not None else None,
    "exposure_log": _parse_path,
    "conversion_log": _parse_path,
    "conversion_path": lambda k, v: _parse_list(v),
    "holdout": lambda k, v: _parse_float(k, v, 0.0, 100.0),
    "workers": lambda k, v: _parse_int(k, v, 1, 256),
    "connect_timeout": lambda k, v: _parse_float(k, v, 0.001, 3600),
    "first_byte_timeout": lambda k, v: _parse_float(k, v, 0.001, 3600),
    "idle_timeout": lambda k, v: _parse_float(k, v, 0.001, 3600),
    "upstream_connections": lambda k, v: _parse_int(k, v, 1, 100_000),
    "budget_ms": lambda k, v: _parse_float(k, v, 0.0, 60_000),
    "max_rewrite_bytes": lambda k, v: _parse_int(k, v, 0, 1 << 34),
    "max_slot_bytes": lambda k, v: _parse_int(k, v, 0, 1 << 34),
    "max_fragment_bytes": lambda k, v: _parse_int(k, v, 1, 1 << 30),
    "reload_interval": lambda k, v: _parse_float(k, v, 0.05, 3600),
    "drain_timeout": lambda k, v: _parse_float(k, v, 0.0, 3600),
    "traffic_server": lambda k, v: _check_choice(k, str(v).lower(), ("protocols", "aiohttp")),
    "upstream_client": lambda k, v: _check_choice(k, str(v).lower(), ("protocols", "aiohttp")),
    "header_timeout": lambda k, v: _parse_float(k, v, 0.0, 3600),
    "keepalive_timeout": lambda k, v: _parse_float(k, v, 0.0, 3600),
    "body_timeout": lambda k, v: _parse_float(k, v, 0.0, 3600),
    "send_timeout": lambda k, v: _parse_float(k, v, 0.0, 3600),
    "max_connections": lambda k, v: _parse_int(k, v, 0, 10_000_000),
    "max_in_flight": lambda k, v: _parse_int(k, v, 0, 10_000_000),
    "retry_after": lambda k, v: _parse_int(k, v, 0, 3600),
    "queue_delay_target_ms": lambda k, v: _parse_float(k, v, 0.0, 60_000),
    "queue_delay_interval_ms": lambda k, v: _parse_float(k, v, 1.0, 600_000),
    "in_flight_lag_target_ms": lambda k, v: _parse_float(k, v, 0.0, 60_000),
    "min_in_flight": lambda k, v: _parse_int(k, v, 1, 10_000_000),
    "backlog": lambda k, v: _parse_int(k, v, 1, 65535),
    "max_header_bytes": lambda k, v: _parse_int(k, v, 1024, 1 << 24),
    "max_headers": lambda k, v: _parse_int(k, v, 8, 100_000),
    "max_target_bytes": lambda k, v: _parse_int(k, v, 256, 1 << 24),
    "max_body_bytes": lambda k, v: _parse_int(k, v, 0, 1 << 40),
    "beacon_max_body_bytes": lambda k, v: _parse_int(k, v, 0, 1 << 30),
    "via": _parse_via,
    "cookie_visitor": _parse_cookie_name,
    "cookie_session": _parse_cookie_name,
    "cookie_affinity": _parse_cookie_name,
    "cookie_cap": _parse_cookie_name,
    "cookie_secret": lambda k, v: str(v),
    "customer_cookie": _parse_optional_cookie,
    "logged_in_cookie": _parse_optional_cookie,
    "cart_cookie": _parse_optional_cookie,
    "consent_cookie": _parse_optional_cookie,
    "consent_value": lambda k, v: str(v),
    "affinity_patterns": lambda k, v: _check_affinity_patterns(k, _parse_list(v)),
    "cache_bytes": lambda k, v: _parse_int(k, v, 0, 1 << 40),
    "render_cache_keys_per_url": lambda k, v: _parse_int(k, v, 0, 1 << 20),
    "render_cache_bytes": lambda k, v: _parse_int(k, v, 0, 1 << 40),
    "access_log": _parse_log_target,
    "access_log_format": lambda k, v: _check_choice(k, str(v).lower(), ("auto", "json", "text")),
    "access_log_level": lambda k, v: _check_choice(k, str(v).lower(), ("info", "warning", "error")),
    "access_log_sample": lambda k, v: _parse_float(k, v, 0.0, 1.0),
    "access_log_client": lambda k, v: _check_choice(k, str(v).lower(), ("truncate", "hash", "off")),
    "log_level": lambda k, v: _check_choice(k, str(v).lower(), ("debug", "info", "warning", "error")),
}


def _check_affinity_patterns(key: str, patterns: tuple[str, ...]) -> tuple[str, ...]:
    for pattern in patterns:
        if not pattern.startswith("/") or pattern.count("{category}") != 1:
            raise SettingsError(key, pattern, "expected a path with one {category}, e.g. /c/{category}")
    return patterns


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise SettingsError(key, value, f"expected one of {', '.join(choices)}")
    return value


KEYS = tuple(_PARSERS)


def read_toml(path: Path) -> dict[str, Any]:
    """Read a config file; syntax errors name the file."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise SettingsError("config", str(path), f"cannot read: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError("config", str(path), f"invalid TOML: {exc}") from exc
    # Allow an optional [edgeproxy] table as well as flat keys.
    if isinstance(data.get("edgeproxy"), dict):
        data = {**{k: v for k, v in data.items() if k != "edgeproxy"}, **data["edgeproxy"]}
    return {k.replace("-", "_"): v for k, v in data.items()}


def build_settings(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config: Path | str | None = None,
    require_upstream: bool = True,
) -> Settings:
    """Merge flags > env > TOML > defaults into one validated ``Settings``.

    ``flags`` holds only the flags the user gave (``None`` values are
    ignored).  ``env`` defaults to ``os.environ``.
    """
    env = os.environ if env is None else env
    flags = {k: v for k, v in (flags or {}).items() if v is not None and v != () and v != []}
    config = config or flags.pop("config", None) or env.get(ENV_PREFIX + "CONFIG")
    raw: dict[str, Any] = {}
    if config:
        file_values = read_toml(Path(config))
        for key in file_values:
            if key not in _PARSERS:
                raise SettingsError(key, file_values[key], f"unknown key in {config}")
        raw.update(file_values)
    for key in _PARSERS:
        env_value = env.get(ENV_PREFIX + key.upper())
        if env_value is not None:
            raw[key] = env_value
    for key, value in flags.items():
        if key not in _PARSERS:
            raise SettingsError(key, value, "unknown setting")
        raw[key] = value
    values = {key: _PARSERS[key](key, value) for key, value in raw.items()}
    if require_upstream and not values.get("upstream"):
        raise SettingsError(
            "upstream", None, "required: give --upstream URL, EDGEPROXY_UPSTREAM or upstream= in the config file"
        )
    if not values.get("cookie_secret"):
        values["cookie_secret"] = secrets.token_hex(32)
    return Settings(**values)
