"""``edgeproxy demo``: the demo shop, the proxy in front of it and example slots.

One process, one command, for a newcomer's first five minutes:

1. check the three ports are free (a clear one-line error otherwise),
2. start the storefront (``storefront.py``) on ``--origin-port``,
3. start ``ProxyServer`` on ``--port`` (admin on ``--admin-port``) with the
   demo settings of ``demo_settings()``,
4. print the URLs and copy-pasteable ``curl`` lines (``what_to_try()``,
   which is also the README's "What to try" section),
5. run until Ctrl-C / SIGTERM, then stop the proxy (it drains and flushes
   its logs) and the storefront.

The demo ignores ``EDGEPROXY_*`` environment variables and config files: it
always runs the same way, so the printed ``curl`` lines always work.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path

from aiohttp import web

from ..errors import SlotFileError
from ..settings import Settings, build_settings
from .storefront import CART_COOKIE, CUSTOMER_COOKIE, SESSION_COOKIE, build_storefront

# The example slots shipped inside the package, for `pip install` users.
PACKAGED_SLOTS = Path(__file__).resolve().parent / "slots"
# The repository's slots/ folder, when running from a checkout.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
CHECKOUT_SLOTS = PROJECT_ROOT / "slots"

GEO_HEADER = "CF-IPCountry"
# curl on this machine may claim any country; nobody else can.
TRUSTED_LOCAL = ("127.0.0.0/8", "::1/128")
CONVERSION_PATH = "/checkout/complete"

HERO = "'<section data-edge-slot=\"hero\"'"
BANNER = "'<div data-edge-slot=\"banner\"'"
ANNOUNCEMENT = "'<div data-edge-slot=\"announcement\"'"
SKUS = "'data-sku=\"[^\"]*\"'"
# curl's own User-Agent is a known crawler's, and bots always get the shop's
# default page (CONTRACT §3), so the curl lines send a browser's.
DESKTOP_UA = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15"
IPHONE_UA = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148"
JAR = "/tmp/edge-demo.jar"


def find_slots_dir(explicit: str | None) -> Path:
    """``--slots`` if given; else the checkout's ``slots/`` (so edits to the
    repo's examples show live); else the copy shipped in the package."""
    if explicit:
        return Path(explicit).expanduser()
    if (PROJECT_ROOT / "pyproject.toml").is_file() and CHECKOUT_SLOTS.is_dir():
        return CHECKOUT_SLOTS
    return PACKAGED_SLOTS


def _connect_host(host: str) -> str:
    """The address to reach a server listening on ``host``, as a URL host."""
    if host in ("", "0.0.0.0", "localhost"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def demo_settings(args: argparse.Namespace, *, origin_url: str, slots: Path, log_dir: Path | None) -> Settings:
    """The proxy's settings for the demo: the storefront upstream, the
    storefront's cookies for ``customer``/``logged_in``/``cart``, a geo
    header curl can fake from localhost, consent assumed (no consent cookie)."""
    flags = {
        "upstream": origin_url,
        "host": args.host,
        "port": args.port,
        "admin_host": args.host,
        "admin_port": args.admin_port,
        "slots": str(slots),
        "geo_header": GEO_HEADER,
        "trust_proxy": TRUSTED_LOCAL,
        "preview_token": args.preview_token,
        "customer_cookie": CUSTOMER_COOKIE,
        "logged_in_cookie": SESSION_COOKIE,
        "cart_cookie": CART_COOKIE,
        "conversion_path": (CONVERSION_PATH,),
    }
    if log_dir is not None:
        flags["exposure_log"] = str(log_dir / "exposures.jsonl")
        flags["conversion_log"] = str(log_dir / "conversions.jsonl")
    return build_settings(flags, env={}, config=None, require_upstream=True)


def what_to_try(proxy: str = "http://127.0.0.1:8000", origin: str = "http://127.0.0.1:8080", token: str = "demo") -> str:
    """Copy-pasteable curl lines, one visitor type each (the README's
    "What to try" section is this text with the default ports)."""
    preview = f"-H 'X-Edge-Preview-Token: {token}'"
    c = 'curl -s -A "$UA"'
    lines = [
        "# curl calls itself curl, and the proxy gives bots the shop's default page:",
        "# set a browser User-Agent first (same shell), every line below sends it.",
        f"UA='{DESKTOP_UA}'",
        "# 1. Anyone: the shop's default hero (the origin sends the same on " + origin + "/)",
        f"{c} {proxy}/ | grep -A3 {HERO}",
        "# 2. A visitor from the UK (the demo trusts CF-IPCountry from this machine)",
        f"{c} -H 'CF-IPCountry: GB' {proxy}/ | grep -A3 {HERO}",
        "# 3. A phone: the app promo (at most 3 views a day per visitor)",
        f"curl -s -A '{IPHONE_UA}' {proxy}/ | grep -A3 {HERO}",
        "# 4. A newsletter reader: the banner",
        f"{c} '{proxy}/?utm_source=newsletter&utm_medium=email' | grep -A1 {BANNER}",
        "# 5. A returning visitor: visit once, then come back in a new session",
        "#    (only the long-lived visitor cookie, as after 30 minutes away)",
        f"{c} -c {JAR} -o /dev/null {proxy}/",
        f"{c} -b \"$(grep -o 'edge_vid.*' {JAR} | tr '\\t' =)\" {proxy}/ | grep -A3 {HERO}",
        "# 6. A trail-running fan: browse the category, then the bestsellers put trail first",
        f"{c} -b {JAR} -c {JAR} -o /dev/null {proxy}/c/trail-running",
        f"{c} -b {JAR} {proxy}/ | grep -o {SKUS}",
        "# 7. A category page sort: staff picks pinned first (compare with the origin)",
        f"{c} {proxy}/c/hiking | grep -o {SKUS}",
        f"{c} {origin}/c/hiking | grep -o {SKUS}",
        "# 8. The free-delivery A/B test: each new visitor lands in one arm, 50/50",
        f"for i in 1 2 3 4 5 6; do {c} {proxy}/ | grep -o 'Free delivery on every order' || echo '(control)'; done",
        "# 9. The shop's own cookies: a signed-in customer, a filled basket",
        f"{c} -b 'customer=1' {proxy}/ | grep -A1 {ANNOUNCEMENT}",
        f"{c} -b 'cart=TR-101' {proxy}/ | grep -A1 {BANNER}",
        "# 10. Preview variants before they go live (needs the preview token)",
        f"{c} {preview} '{proxy}/?edge_preview=announcement:black-friday,hero:uk-ireland' | grep -A3 -e {ANNOUNCEMENT} -e {HERO}",
        "# 11. Why each slot chose what it did: the X-Edge-Explain decision trace",
        f"{c} -o /dev/null -D - {preview} -H 'CF-IPCountry: GB' '{proxy}/?utm_medium=email' | grep -i '^x-edge-explain' | cut -d' ' -f2- | python3 -m json.tool",
        "# 12. Compressed like a browser asks for it, private to this visitor, with Server-Timing",
        f"{c} -o /dev/null -D - --compressed -H 'CF-IPCountry: GB' {proxy}/ | grep -i -e '^content-encoding' -e '^cache-control' -e '^server-timing'",
        "# 13. A bot (here: plain curl) always gets the shop's default, and no cookies",
        f"curl -s -H 'CF-IPCountry: GB' {proxy}/ | grep -A3 {HERO}",
    ]
    return "\n".join(lines)


def banner(*, proxy: str, origin: str, admin: str, slots: Path, token: str, log_dir: Path | None) -> str:
    """What ``edgeproxy demo`` prints once everything is listening."""
    try_lines = "\n".join(("  " + line if line.startswith(("#", "UA=")) else "    " + line) for line in what_to_try(proxy, origin, token).splitlines())
    logs = ""
    report = ""
    if log_dir is not None:
        exposures, conversions = log_dir / "exposures.jsonl", log_dir / "conversions.jsonl"
        logs = f"  Experiment logs          {exposures}\n                           {conversions}\n"
        report = (
            f"\nPlace an order ({proxy}/p/TR-101: Add to basket, Place order) to log a conversion;\n"
            f"after Ctrl-C, compare the A/B arms with:\n    edgeproxy report {exposures} {conversions}\n"
        )
    return f"""
edgeproxy demo: Ridgeline Outdoor, a demo shop, personalised at the edge.

  Shop through the proxy   {proxy}/   <- open this in a browser
  The shop, untouched      {origin}/
  Admin                    {admin}/dashboard   (also /metrics /healthz /readyz)
  Merchandisers' console   {admin}/console/    (what is live, preview as a visitor, how it is doing)
  Variants                 {slots}
                           (edit or add a file there: it is live within a second)
  Preview token            {token}
{logs}
What to try: each command shows one slot as one kind of visitor sees it.

{try_lines}
{report}
Ctrl-C stops the demo.
"""


def _port_problem(host: str, ports: dict[str, int]) -> str | None:
    """A one-line reason when a demo port is taken or repeated, else None.

    Probed with a throw-away bind (SO_REUSEADDR, as aiohttp binds) so the
    message can name the flag; the real bind still reports a race.
    """
    seen: dict[int, str] = {}
    for flag, port in ports.items():
        if port == 0:
            continue
        if port in seen:
            return f"{seen[port]} and {flag} are both {port}; give them different ports"
        seen[port] = flag
        try:
            infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except socket.gaierror as exc:
            return f"cannot listen on --host {host!r}: {exc.strerror or exc}"
        for family, *_rest, address in infos[:1]:
            with contextlib.closing(socket.socket(family, socket.SOCK_STREAM)) as probe:
                if hasattr(socket, "SO_REUSEADDR") and sys.platform != "win32":
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind(address)
                except OSError as exc:
                    if exc.errno == errno.EADDRINUSE:
                        return f"port {port} is already in use ({flag}); stop whatever holds it or pick another, e.g. {flag} {port + 1}"
                    return f"cannot listen on {host}:{port} ({flag}): {exc.strerror or exc}"
    return None


async def _serve(args: argparse.Namespace, out) -> int:
    # 1. Ports first: the most likely problem, and the cheapest to explain.
    problem = _port_problem(args.host, {"--origin-port": args.origin_port, "--port": args.port, "--admin-port": args.admin_port})
    if problem:
        print(f"edgeproxy demo: {problem}", file=sys.stderr)
        return 1
    try:
        from ..server import ProxyServer
    except ImportError as exc:  # a partial checkout during development
        print(f"edgeproxy demo: the proxy server is not available ({exc})", file=sys.stderr)
        return 1

    # 2. The storefront: the origin the proxy fetches from.
    runner = web.AppRunner(build_storefront(), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, args.host, args.origin_port)
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        print(f"edgeproxy demo: cannot start the demo shop on port {args.origin_port} (--origin-port): {exc.strerror or exc}", file=sys.stderr)
        return 1
    origin_port = runner.addresses[0][1]
    origin = f"http://{_connect_host(args.host)}:{origin_port}"

    # 3. The proxy.
    slots = find_slots_dir(args.slots)
    log_dir = Path(tempfile.mkdtemp(prefix="edgeproxy-demo-"))
    proxy_server = ProxyServer(demo_settings(args, origin_url=origin, slots=slots, log_dir=log_dir))
    try:
        await proxy_server.start()
    except OSError as exc:
        await runner.cleanup()
        shutil.rmtree(log_dir, ignore_errors=True)
        print(f"edgeproxy demo: cannot start the proxy on port {args.port} / admin {args.admin_port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except SlotFileError as exc:
        await runner.cleanup()
        shutil.rmtree(log_dir, ignore_errors=True)
        print(f"edgeproxy demo: a slot file is invalid: {exc}", file=sys.stderr)
        return 1

    # 4. Tell the newcomer what to do.
    host = _connect_host(args.host)
    print(
        banner(
            proxy=f"http://{host}:{proxy_server.port}",
            origin=origin,
            admin=f"http://{host}:{proxy_server.admin_port}",
            slots=slots,
            token=args.preview_token,
            log_dir=log_dir,
        ),
        file=out,
        flush=True,
    )

    # 5. Run until Ctrl-C or SIGTERM, then shut down in reverse order.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        await stop.wait()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        print("\nedgeproxy demo: stopping…", file=out, flush=True)
        await proxy_server.stop()
        await runner.cleanup()
        _tidy_logs(log_dir, out)
    print("edgeproxy demo: stopped.", file=out, flush=True)
    return 0


def _tidy_logs(log_dir: Path, out) -> None:
    """Keep the experiment logs when something was logged, else remove them."""
    # exposures first: the order `edgeproxy report EXPOSURES CONVERSIONS` reads best
    logs = sorted((p for p in log_dir.glob("*.jsonl") if p.stat().st_size > 0), key=lambda p: p.name != "exposures.jsonl")
    if logs:
        print(f"edgeproxy demo: experiment logs kept: edgeproxy report {' '.join(map(str, logs))}", file=out, flush=True)
    else:
        shutil.rmtree(log_dir, ignore_errors=True)


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo until Ctrl-C / SIGTERM; 0 on a clean stop, 1 when it
    cannot start (port taken, invalid slots)."""
    try:
        return asyncio.run(_serve(args, sys.stdout))
    except KeyboardInterrupt:  # platforms without loop signal handlers
        return 0
