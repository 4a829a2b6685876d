"""nginx ``proxy_pass`` + ``sub_filter``: the industry's cheapest personaliser.

The config is generated into a private directory and nginx runs there in the
foreground (``daemon off``) with one worker, its own pid file, error log and
temp paths, so it needs no root and touches nothing outside that directory.
Upstream connections are kept alive (``keepalive``, HTTP/1.1), the origin is
asked for identity bodies (``sub_filter`` cannot see into gzip) and the hero
and banner get the same contents edgeproxy puts there (``sub_filter`` acts on
``text/html``, its default).  Proxy buffers are sized so no page spills to a
temp file.  ``sub_filter`` cannot
reorder the product grid, so nginx does two of the three edits.
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
from pathlib import Path

from .pages import BANNER_EMPTY, BANNER_VARIANT, HERO_DEFAULT, HERO_VARIANT


def nginx_binary() -> str | None:
    """The ``nginx`` on PATH, or None (Debian installs it in /usr/sbin, which
    is on root's PATH but not always on other users')."""
    return shutil.which("nginx")


def nginx_version(binary: str) -> str:
    out = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10)
    return (out.stderr or out.stdout).strip().removeprefix("nginx version: ")


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def write_config(prefix: Path, *, port: int, upstream_port: int, host: str = "127.0.0.1", gzip: bool = False) -> Path:
    """Write ``nginx.conf`` (and its temp dirs) under ``prefix``; returns the file.

    ``gzip``: compress responses for clients that accept it, at level 1 (as
    edgeproxy does), since the origin is asked for identity bodies."""
    compress = "gzip on; gzip_comp_level 1; gzip_types text/html; gzip_min_length 1024;" if gzip else "gzip off;"
    for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi", "logs"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    # As root, nginx would switch its worker to "nobody", which cannot read
    # the private temp dirs; run the worker as whoever runs the benchmark.
    user = f"user {getpass.getuser()};\n" if os.geteuid() == 0 else ""
    conf = f"""\
{user}worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 1000000;
    {compress}
    upstream origin {{
        server {host}:{upstream_port};
        keepalive 64;
    }}
    server {{
        listen {host}:{port} reuseport;
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Accept-Encoding "";
            # Buffers that hold a 500 KB page: nginx's defaults (8 x 4/8 KB)
            # spill a 120 KB response to a temp file, which more than doubles
            # its CPU per request (184 vs 80 us measured).
            proxy_buffer_size 16k;
            proxy_buffers 64 16k;
            proxy_busy_buffers_size 64k;
            proxy_max_temp_file_size 0;
            sub_filter_once on;
            sub_filter {_quote(HERO_DEFAULT)} {_quote(HERO_VARIANT)};
            sub_filter {_quote(BANNER_EMPTY)} {_quote(BANNER_EMPTY.replace('></div>', '>' + BANNER_VARIANT + '</div>'))};
        }}
    }}
}}
"""
    path = prefix / "nginx.conf"
    path.write_text(conf)
    return path


def command(binary: str, prefix: Path, conf: Path) -> list[str]:
    # -e: the startup error log, before the config's error_log applies
    # (the default /var/log/nginx/error.log is not writable unprivileged).
    return [binary, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "logs" / "error.log")]
