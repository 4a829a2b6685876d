"""Generated exposure and conversion logs for the report benchmark and the
simulations: the lines ``events.EventLog`` writes, at any size, fast.

``write_logs(dir, visitors=2_000_000)`` writes ``exposures.jsonl`` (~2.3
exposure lines per visitor: every page view shows the hero experiment, one
in seven also the banner one) and ``conversions.jsonl`` (~3 % of visitors,
a few before their first exposure), over 28 days, deterministic for a seed.
"""

from __future__ import annotations

import random
from pathlib import Path

from edgeproxy.events import iso_ms

T0 = 1_793_000_000.0  # 2026-10-26
DAYS = 28
DEVICES = ("desktop", "mobile", "mobile", "tablet")
COUNTRIES = ("GB", "DE", "FR", "US", "NL")
SOURCES = ("direct", "search", "social", "email")
PATHS = ("/", "/", "/category/shoes", "/product/42")
HERO_ARMS = ("control", "promo")
BANNER_ARMS = ("control", "blue", "red")
RATES = {"control": 0.030, "promo": 0.033, "blue": 0.030, "red": 0.030}
EARLY = 0.05  # of the conversions, this share comes before the visitor's first exposure (not counted)


def write_logs(directory: Path, visitors: int = 2_000_000, seed: int = 1) -> tuple[Path, Path, int, int]:
    """Write the two logs; returns their paths and line counts."""
    directory.mkdir(parents=True, exist_ok=True)
    exp_path, conv_path = directory / "exposures.jsonl", directory / "conversions.jsonl"
    rnd = random.Random(seed)
    rand, getbits = rnd.random, rnd.getrandbits
    span = DAYS * 86400
    exposures = conversions = 0
    with open(exp_path, "w", encoding="ascii", buffering=1 << 20) as fe, \
            open(conv_path, "w", encoding="ascii", buffering=1 << 20) as fc:
        out: list[str] = []
        for i in range(visitors):
            visitor = f"{getbits(64):016x}{i:08x}"
            hero = HERO_ARMS[getbits(1)]
            banner = BANNER_ARMS[int(rand() * 3)]
            device, country, source = DEVICES[i & 3], COUNTRIES[i % 5], SOURCES[(i >> 3) & 3]
            t = T0 + rand() * span
            first = t
            views = 1
            while rand() < 0.5:
                views += 1
            for _ in range(views):
                path = PATHS[getbits(2)]
                tail = f'"path":"{path}","device":"{device}","country":"{country}","source":"{source}"}}\n'
                out.append(f'{{"ts":"{iso_ms(t)}","visitor":"{visitor}","experiment":"bf-hero","arm":"{hero}",'
                           f'"slot":"hero",{tail}')
                exposures += 1
                if rand() < 1 / 7:
                    out.append(f'{{"ts":"{iso_ms(t)}","visitor":"{visitor}","experiment":"banner","arm":"{banner}",'
                               f'"slot":"banner",{tail}')
                    exposures += 1
                t += rand() * 3600
            if rand() < RATES[hero]:
                when = first - 600 if rand() < EARLY else t + rand() * 600
                value = round(20 + rand() * 180, 2)
                fc.write(f'{{"ts":"{iso_ms(when)}","visitor":"{visitor}","path":"/checkout/complete",'
                         f'"value":{value},"kind":"path"}}\n')
                conversions += 1
            if len(out) >= 8192:
                fe.write("".join(out))
                out.clear()
        fe.write("".join(out))
    return exp_path, conv_path, exposures, conversions
