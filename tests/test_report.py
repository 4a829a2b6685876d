"""``edgeproxy report``: the statistics against published values, and the
command end to end on generated logs."""

from __future__ import annotations

import gzip
import io
import math
from pathlib import Path

import orjson
import pytest

from edgeproxy.cli import build_parser, main
from edgeproxy.errors import SettingsError
from edgeproxy.events import EventLog, iso_ms
from edgeproxy.report import (
    MAX_EXAMPLES,
    build_report,
    chi2_sf,
    chi_square_gof,
    fisher_exact_p,
    newcombe_interval,
    parse_weights,
    regularized_gamma_q,
    risk_ratio_interval,
    run_report,
    sort_logs,
    weights_from_slots,
    wilson_interval,
    z_test_p,
)

T0 = 1_795_766_102.0  # 2026-11-27T07:55:02Z


# ---------------------------------------------------------------------------
# Statistics against known values
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "x, n, lo, hi",
    [
        # Newcombe (1998), Stat Med 17:857, Table I, method 3 (Wilson score)
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0000, 0.1611),
        (1, 29, 0.0061, 0.1718),
        (29, 29, 0.8830, 1.0000),
    ],
)
def test_wilson_interval_matches_newcombe_table(x, n, lo, hi):
    assert wilson_interval(x, n) == pytest.approx((lo, hi), abs=5e-5)


@pytest.mark.parametrize(
    "x1, n1, x2, n2, lo, hi",
    [
        # Newcombe (1998), Stat Med 17:873, Table II, method 10 (hybrid score)
        (56, 70, 48, 80, 0.0524, 0.3339),
        (9, 10, 3, 10, 0.1705, 0.8090),
        (6, 7, 2, 7, 0.0582, 0.8062),
        (5, 56, 0, 29, -0.0381, 0.1926),
        (0, 10, 0, 20, -0.1611, 0.2775),
        (0, 10, 0, 10, -0.2775, 0.2775),
        (10, 10, 0, 20, 0.6791, 1.0000),
        (10, 10, 0, 10, 0.6075, 1.0000),
    ],
)
def test_newcombe_difference_interval_matches_published_table(x1, n1, x2, n2, lo, hi):
    assert newcombe_interval(x1, n1, x2, n2) == pytest.approx((lo, hi), abs=5e-5)


@pytest.mark.parametrize(
    "x1, n1, x2, n2, p",
    [
        # R: prop.test(c(60, 40), c(100, 100), correct = FALSE)$p.value
        (60, 100, 40, 100, 0.004677735),
        (50, 100, 50, 100, 1.0),
        (0, 100, 0, 100, 1.0),  # no conversions at all: no evidence
    ],
)
def test_z_test_p_value_matches_pearson_chi_square_without_correction(x1, n1, x2, n2, p):
    assert z_test_p(x1, n1, x2, n2) == pytest.approx(p, rel=1e-5)


@pytest.mark.parametrize("x1, n1, x2, n2", [(120, 1000, 100, 1000), (7, 31, 19, 44), (500, 9000, 430, 9100)])
def test_z_test_squared_is_pearsons_chi_square_on_the_two_by_two_table(x1, n1, x2, n2):
    table = [[x1, n1 - x1], [x2, n2 - x2]]
    n, cols = n1 + n2, [x1 + x2, n1 + n2 - x1 - x2]
    pearson = sum((table[r][c] - (n1, n2)[r] * cols[c] / n) ** 2 / ((n1, n2)[r] * cols[c] / n)
                  for r in range(2) for c in range(2))
    assert z_test_p(x1, n1, x2, n2) == pytest.approx(chi2_sf(pearson, 1), rel=1e-9)


@pytest.mark.parametrize(
    "x1, n1, x2, n2, p",
    [
        # R: fisher.test(matrix(c(3, 1, 1, 3), 2))$p.value  (the lady tasting tea)
        (3, 4, 1, 4, 0.4857143),
        # R: fisher.test(matrix(c(1, 11, 9, 3), 2))$p.value
        (1, 12, 9, 12, 0.002759456),
        (0, 10, 0, 10, 1.0),
    ],
)
def test_fisher_exact_p_value_matches_r(x1, n1, x2, n2, p):
    assert fisher_exact_p(x1, n1, x2, n2) == pytest.approx(p, rel=1e-6)


@pytest.mark.parametrize(
    "x, df, sf",
    [
        # upper critical values of the chi-square distribution
        (3.841458820694124, 1, 0.05),
        (6.634896601021214, 1, 0.01),
        (10.827566170662733, 1, 0.001),
        (5.991464547107979, 2, 0.05),
        (13.815510557964274, 2, 0.001),
        (11.070497693516351, 5, 0.05),
        (124.34211340400407, 100, 0.05),
        # P(|Z| > 1) for the normal: chi-square(1) at 1
        (1.0, 1, 0.31731050786291415),
        (0.0, 3, 1.0),
    ],
)
def test_chi_square_survival_function_matches_tables(x, df, sf):
    assert chi2_sf(x, df) == pytest.approx(sf, rel=1e-9)


@pytest.mark.parametrize("x", [0.01, 0.5, 3.0, 20.0, 80.0])
def test_chi_square_with_two_degrees_of_freedom_is_exponential(x):
    assert chi2_sf(x, 2) == pytest.approx(math.exp(-x / 2), rel=1e-12)


@pytest.mark.parametrize("a, x", [(0.5, 0.2), (3.0, 2.5), (3.0, 7.0), (50.0, 45.0)])
def test_regularized_gamma_q_agrees_with_poisson_sum_for_integer_a(a, x):
    if a != int(a):  # Q(1/2, x) = erfc(sqrt(x))
        assert regularized_gamma_q(a, x) == pytest.approx(math.erfc(math.sqrt(x)), rel=1e-12)
        return
    # Q(k, x) = P(Poisson(x) < k)
    poisson = sum(math.exp(-x + i * math.log(x) - math.lgamma(i + 1)) for i in range(int(a)))
    assert regularized_gamma_q(a, x) == pytest.approx(poisson, rel=1e-10)


def test_risk_ratio_interval_is_undefined_without_conversions_and_brackets_the_ratio():
    assert risk_ratio_interval(0, 100, 5, 100) is None
    lo, hi = risk_ratio_interval(30, 200, 20, 200)
    assert lo < 1.5 < hi
    # Katz: se = sqrt(1/30 - 1/200 + 1/20 - 1/200)
    assert math.log(hi / 1.5) == pytest.approx(1.959963984540054 * math.sqrt(1 / 30 - 1 / 200 + 1 / 20 - 1 / 200))


def test_goodness_of_fit_with_visitors_in_an_arm_of_weight_zero_is_a_mismatch():
    stat, df, p = chi_square_gof([50, 50, 3], [50, 50, 0])
    assert (stat, df, p) == (math.inf, 2, 0.0)


# ---------------------------------------------------------------------------
# Generated logs
# ---------------------------------------------------------------------------
def exposure(visitor: str, arm: str, ts: float, experiment: str = "bf-hero", slot: str = "hero") -> dict:
    return {"ts": iso_ms(ts), "visitor": visitor, "experiment": experiment, "arm": arm, "slot": slot,
            "path": "/", "device": "desktop", "country": "GB", "source": "direct"}


def conversion(visitor: str, ts: float, value: float | None = None) -> dict:
    return {"ts": iso_ms(ts), "visitor": visitor, "path": "/checkout/complete", "value": value, "kind": "path"}


def write_jsonl(path: Path, events: list[dict], extra: str = "") -> Path:
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events) + extra.encode())
    return path


def split_logs(tmp_path: Path, arms: dict[str, tuple[int, int]]) -> tuple[Path, Path]:
    """Per arm ``(visitors, converters)``: each visitor is exposed, the
    first ``converters`` of each arm convert a minute later."""
    exposures, conversions = [], []
    i = 0
    for arm, (visitors, converters) in arms.items():
        for j in range(visitors):
            i += 1
            exposures.append(exposure(f"{arm}-{j}", arm, T0 + i))
            if j < converters:
                conversions.append(conversion(f"{arm}-{j}", T0 + i + 60, 10.0))
    return write_jsonl(tmp_path / "exp.jsonl", exposures), write_jsonl(tmp_path / "conv.jsonl", conversions)


def arms_of(report) -> dict:
    (exp,) = report.experiments
    return {a.arm: a for a in exp.arms}


async def test_report_from_an_eventlog_recovers_a_known_uplift(tmp_path):
    log = EventLog(tmp_path / "exp.jsonl", tmp_path / "conv.jsonl")
    await log.start()
    for arm, converters in (("control", 200), ("promo", 300)):
        for j in range(2000):
            log.exposure(ts=T0 + j, visitor=f"{arm}{j}", experiment="bf-hero", arm=arm, slot="hero", path="/",
                         device="mobile", country="GB", source="search")
            if j < converters:
                log.conversion(ts=T0 + j + 30, visitor=f"{arm}{j}", path="/checkout/complete", value=50.0)
    await log.close()

    report = build_report(tmp_path / "exp.jsonl", tmp_path / "conv.jsonl")
    arms = arms_of(report)
    control, promo = arms["control"], arms["promo"]
    assert (control.visitors, control.conversions, promo.visitors, promo.conversions) == (2000, 200, 2000, 300)
    assert (control.rate, promo.rate) == (0.10, 0.15)
    assert promo.abs_uplift == pytest.approx(0.05)
    assert promo.rel_uplift == pytest.approx(0.5)
    assert promo.abs_uplift_ci[0] > 0 and promo.rel_uplift_ci[0] > 0  # the uplift is real
    assert promo.abs_uplift_ci == pytest.approx(newcombe_interval(300, 2000, 200, 2000))
    assert (promo.test, promo.p_value) == ("z", pytest.approx(z_test_p(300, 2000, 200, 2000)))
    assert promo.p_value < 1e-5
    assert promo.value == 300 * 50.0
    assert control.p_value is None and control.abs_uplift is None
    assert report.experiments[0].srm.flagged is False


def test_a_conversion_counts_only_at_or_after_the_first_exposure_and_once_per_visitor(tmp_path):
    exposures = [
        exposure("early", "control", T0 + 100),
        exposure("same-ms", "control", T0 + 100),
        exposure("twice", "promo", T0 + 100),
        exposure("twice", "promo", T0 + 200),  # a second page view: still one visitor
        exposure("never", "promo", T0 + 100),
    ]
    conversions = [
        conversion("early", T0 + 99),  # before exposure: not an effect of the arm
        conversion("same-ms", T0 + 100),
        conversion("twice", T0 + 150, 5.0),
        conversion("twice", T0 + 250, 7.0),
        conversion("stranger", T0 + 300),  # never exposed: in no experiment
    ]
    report = build_report(write_jsonl(tmp_path / "e.jsonl", exposures), write_jsonl(tmp_path / "c.jsonl", conversions))
    arms = arms_of(report)
    assert (arms["control"].visitors, arms["control"].conversions) == (2, 1)
    assert (arms["promo"].visitors, arms["promo"].conversions, arms["promo"].value) == (2, 1, 12.0)


def test_a_visitor_in_two_arms_counts_in_the_first_and_is_a_warning(tmp_path):
    exposures = [
        exposure("v1", "promo", T0 + 50),  # written later by another worker, but earlier
        exposure("v1", "control", T0 + 10),
        exposure("v2", "control", T0 + 20),
    ]
    report = build_report(write_jsonl(tmp_path / "e.jsonl", exposures))
    arms = arms_of(report)
    assert (arms["control"].visitors, arms["promo"].visitors) == (2, 0)
    (warning,) = report.experiments[0].warnings
    assert "1 visitor(s) were exposed to more than one arm" in warning


def test_small_counts_use_fishers_exact_test(tmp_path):
    report = build_report(*split_logs(tmp_path, {"control": (40, 1), "promo": (40, 6)}))
    promo = arms_of(report)["promo"]
    assert promo.test == "fisher"
    assert promo.p_value == pytest.approx(fisher_exact_p(6, 40, 1, 40))


def test_srm_is_flagged_on_a_60_40_split_of_10000_visitors(tmp_path):
    report = build_report(*split_logs(tmp_path, {"control": (6000, 600), "promo": (4000, 400)}))
    srm = report.experiments[0].srm
    assert srm.flagged and srm.basis == "equal split"
    assert srm.chi2 == pytest.approx(400.0) and srm.df == 1 and srm.p_value < 1e-80


def test_srm_is_not_flagged_when_the_60_40_split_was_intended(tmp_path):
    weights = parse_weights(["bf-hero:promo=40"])  # control gets the remaining 60
    report = build_report(*split_logs(tmp_path, {"control": (6000, 600), "promo": (4000, 400)}), weights=weights)
    srm = report.experiments[0].srm
    assert not srm.flagged and srm.basis == "--weights"
    assert srm.expected == {"control": 0.6, "promo": 0.4} and srm.chi2 == pytest.approx(0.0)


def test_srm_is_not_flagged_on_a_fair_split(tmp_path):
    report = build_report(*split_logs(tmp_path, {"control": (5040, 500), "promo": (4960, 500)}))
    srm = report.experiments[0].srm
    assert not srm.flagged and srm.p_value == pytest.approx(chi2_sf(0.64, 1))


@pytest.mark.parametrize(
    "spec, message",
    [
        ("bf-hero", "expected EXPERIMENT:ARM=PERCENT"),
        ("bf-hero:promo", "'promo' is not ARM=PERCENT"),
        ("bf-hero:promo=-5", "'promo=-5' is not ARM=PERCENT"),
        ("bf-hero:control=0,promo=0", "add up to 0"),
    ],
)
def test_bad_weights_are_rejected_naming_the_flag_and_value(spec, message):
    with pytest.raises(SettingsError, match=message) as info:
        parse_weights([spec])
    assert info.value.key == "--weights" and info.value.value == spec


def test_malformed_lines_are_skipped_counted_and_reported_with_file_and_line(tmp_path):
    good = [exposure("v1", "control", T0), exposure("v2", "promo", T0)]
    bad = (
        "not json\n"
        "[1, 2]\n"
        '{"ts": "2026-11-27T07:55:02.000Z", "visitor": "v3", "arm": "promo"}\n'
        '{"ts": "yesterday", "visitor": "v4", "experiment": "bf-hero", "arm": "promo"}\n'
        '{"ts": "2026-11-27T07:55:02.000Z", "visitor": "", "experiment": "bf-hero", "arm": "promo"}\n'
        "\n"  # blank lines are not malformed
        '{"ts": "2026-11-27T07:55:0'  # a torn last line
    )
    path = write_jsonl(tmp_path / "exp.jsonl", good, bad)
    report = build_report(path)
    (m,) = report.malformed
    assert m.count == 6
    assert m.examples == [
        f"{path}:3: not valid JSON",
        f"{path}:4: not a JSON object",
        f"{path}:5: missing or empty 'experiment'",
        f"{path}:6: bad ts 'yesterday'",
        f"{path}:7: missing or empty 'visitor'",
    ][:MAX_EXAMPLES]
    assert sum(a.visitors for a in report.experiments[0].arms) == 2

    out = io.StringIO()
    assert main_with_out(["report", str(path)], out) == 0
    assert f"{path}: 6 malformed line(s) skipped" in out.getvalue()
    assert f"  {path}:3: not valid JSON" in out.getvalue()


def test_a_conversion_with_a_non_numeric_value_is_malformed(tmp_path):
    exp = write_jsonl(tmp_path / "e.jsonl", [exposure("v1", "control", T0)])
    conv = write_jsonl(tmp_path / "c.jsonl", [conversion("v1", T0 + 1) | {"value": "12 EUR"}])
    report = build_report(exp, conv)
    assert report.malformed[0].examples == [f"{conv}:1: bad value '12 EUR'"]


# ---------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------
def main_with_out(argv: list[str], out: io.StringIO, err: io.StringIO | None = None) -> int:
    return run_report(build_parser().parse_args(argv), out=out, err=err or io.StringIO())


def test_the_table_shows_each_arm_with_rate_interval_uplift_and_p_value(tmp_path):
    exp, conv = split_logs(tmp_path, {"control": (2000, 200), "promo": (2000, 300)})
    out = io.StringIO()
    assert main_with_out(["report", str(exp), str(conv)], out) == 0
    text = out.getvalue()
    assert "bf-hero   slots: hero" in text
    promo_row = next(line for line in text.splitlines() if line.strip().startswith("promo"))
    for cell in ("2,000", "300", "15.00%", "+5.00 pp", "+50.0%", "(z)"):
        assert cell in promo_row
    assert "SRM: ok (chi2 = 0.00, df = 1, p = 1.0000; vs equal split 50/50)" in text


def test_without_a_conversion_log_the_report_shows_visitors_and_srm_only(tmp_path):
    exp, _ = split_logs(tmp_path, {"control": (6000, 0), "promo": (4000, 0)})
    out = io.StringIO()
    assert main_with_out(["report", str(exp)], out) == 0
    assert "no conversion log" in out.getvalue()
    assert "SRM: MISMATCH" in out.getvalue()


def test_json_output_is_machine_readable(tmp_path):
    exp, conv = split_logs(tmp_path, {"control": (100, 10), "promo": (100, 20)})
    out = io.StringIO()
    assert main_with_out(["report", str(exp), str(conv), "--json"], out) == 0
    data = orjson.loads(out.getvalue())
    (experiment,) = data["experiments"]
    assert experiment["name"] == "bf-hero"
    assert [(a["arm"], a["visitors"], a["conversions"]) for a in experiment["arms"]] == [("control", 100, 10), ("promo", 100, 20)]
    assert experiment["arms"][1]["rate_ci"] == list(wilson_interval(20, 100))
    assert set(data["methods"]) >= {"rate_ci", "abs_uplift_ci", "p_value", "srm"}


def test_html_report_is_a_self_contained_file_with_an_svg_chart(tmp_path):
    exp, conv = split_logs(tmp_path, {"control": (500, 50), "promo": (500, 70)})
    target = tmp_path / "report.html"
    assert main(["report", str(exp), str(conv), "--html", str(target)]) == 0
    page = target.read_text(encoding="utf-8")
    assert page.startswith("<!doctype html>") and "<svg" in page and "</svg>" in page
    assert "<circle" in page  # a point per arm, with interval whiskers
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")  # nothing fetched
    assert "<script" not in page


def test_names_from_the_logs_are_escaped_in_html(tmp_path):
    exp = write_jsonl(tmp_path / "e.jsonl", [exposure("v1", "<b>x</b>", T0, experiment="<script>alert(1)</script>")])
    conv = write_jsonl(tmp_path / "c.jsonl", [])
    target = tmp_path / "r.html"
    assert main(["report", str(exp), str(conv), "--html", str(target)]) == 0
    page = target.read_text(encoding="utf-8")
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page


def test_gzipped_logs_from_logrotate_are_read(tmp_path):
    exp, conv = split_logs(tmp_path, {"control": (10, 1), "promo": (10, 2)})
    gz = tmp_path / "exp.jsonl.1.gz"
    gz.write_bytes(gzip.compress(exp.read_bytes()))
    assert arms_of(build_report(gz, conv))["promo"].conversions == 2


@pytest.mark.parametrize("make", [
    lambda tmp: tmp / "missing.jsonl",
    lambda tmp: tmp,  # a folder
])
def test_an_unreadable_input_exits_2_naming_the_file(tmp_path, make, capsys):
    target = make(tmp_path)
    assert main(["report", str(target)]) == 2
    assert f"edgeproxy report: {target}: cannot read" in capsys.readouterr().err


def test_an_unreadable_conversion_log_exits_2(tmp_path, capsys):
    exp, _ = split_logs(tmp_path, {"control": (1, 0)})
    assert main(["report", str(exp), str(tmp_path / "nope.jsonl")]) == 2
    assert "nope.jsonl: cannot read" in capsys.readouterr().err


def test_bad_weights_exit_2(tmp_path, capsys):
    exp, _ = split_logs(tmp_path, {"control": (1, 0)})
    assert main(["report", str(exp), "--weights", "oops"]) == 2
    assert "--weights" in capsys.readouterr().err


def test_an_empty_exposure_log_is_a_report_with_no_experiments(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_bytes(b"")
    out = io.StringIO()
    assert main_with_out(["report", str(path)], out) == 0
    assert "no experiments in the exposure log" in out.getvalue()


def write_experiment_slots(root: Path, weight: int) -> Path:
    (root / "hero").mkdir(parents=True)
    (root / "hero" / "promo.html").write_text(
        f'<!--edge\nexperiment = {{ name = "bf-hero", weight = {weight} }}\n-->\n<p>promo</p>\n', encoding="utf-8")
    return root


def test_slots_folder_gives_the_intended_split_with_control_the_remainder(tmp_path):
    slots = write_experiment_slots(tmp_path / "slots", 30)
    assert weights_from_slots(slots) == {"bf-hero": {"promo": 30.0, "control": 70.0}}


def test_srm_against_the_slots_weights_accepts_a_30_70_design_an_equal_split_would_flag(tmp_path):
    exp, conv = split_logs(tmp_path, {"control": (7000, 700), "promo": (3000, 300)})
    slots = write_experiment_slots(tmp_path / "slots", 30)
    equal, configured = io.StringIO(), io.StringIO()
    assert main_with_out(["report", str(exp), str(conv)], equal) == 0
    assert main_with_out(["report", str(exp), str(conv), "--slots", str(slots)], configured) == 0
    assert "SRM: MISMATCH" in equal.getvalue()
    assert "SRM: ok (chi2 = 0.00, df = 1, p = 1.0000; vs --slots 70/30)" in configured.getvalue()


def test_weights_flag_wins_over_the_slots_folder(tmp_path):
    exp, _ = split_logs(tmp_path, {"control": (5000, 0), "promo": (5000, 0)})
    report = build_report(exp, weights=parse_weights(["bf-hero:promo=50"]),
                          slot_weights={"bf-hero": {"promo": 30.0, "control": 70.0}})
    assert report.experiments[0].srm.basis == "--weights" and not report.experiments[0].srm.flagged


def test_a_missing_slots_folder_exits_2(tmp_path, capsys):
    exp, _ = split_logs(tmp_path, {"control": (1, 0)})
    assert main(["report", str(exp), "--slots", str(tmp_path / "nope")]) == 2
    assert "no such slots folder (--slots)" in capsys.readouterr().err


def test_the_order_of_the_logs_on_the_command_line_does_not_matter(tmp_path):
    # `edgeproxy demo` lists the kept logs alphabetically: conversions first.
    exp, conv = split_logs(tmp_path, {"control": (200, 20), "promo": (200, 30)})
    straight, swapped = io.StringIO(), io.StringIO()
    assert main_with_out(["report", str(exp), str(conv), "--json"], straight) == 0
    assert main_with_out(["report", str(conv), str(exp), "--json"], swapped) == 0
    assert orjson.loads(straight.getvalue()) == orjson.loads(swapped.getvalue())
    assert orjson.loads(straight.getvalue())["experiments"][0]["arms"][1]["conversions"] == 30


def test_rotated_logs_make_one_report(tmp_path):
    exp, conv = split_logs(tmp_path, {"control": (100, 10), "promo": (100, 20)})
    lines = exp.read_bytes().splitlines(keepends=True)
    old = tmp_path / "exposures.jsonl.1.gz"
    old.write_bytes(gzip.compress(b"".join(lines[:150])))
    exp.write_bytes(b"".join(lines[150:]))
    out = io.StringIO()
    assert main_with_out(["report", str(old), str(exp), str(conv), "--json"], out) == 0
    data = orjson.loads(out.getvalue())
    assert data["exposure_files"] == [str(old), str(exp)] and data["exposure_lines"] == 200
    assert [(a["visitors"], a["conversions"]) for a in data["experiments"][0]["arms"]] == [(100, 10), (100, 20)]


def test_a_log_with_no_event_to_recognise_keeps_its_position_s_meaning(tmp_path):
    exp, conv = split_logs(tmp_path, {"control": (10, 1)})
    junk = tmp_path / "junk.jsonl"
    junk.write_text("not json\n", encoding="utf-8")
    assert sort_logs([junk, conv]) == ([junk], [conv])
    assert sort_logs([exp, junk]) == ([exp], [junk])


def test_a_quoted_glob_reads_every_rotated_part(tmp_path):
    exp, conv = split_logs(tmp_path, {"control": (100, 10), "promo": (100, 20)})
    lines = exp.read_bytes().splitlines(keepends=True)
    (tmp_path / "exposures-1.jsonl.gz").write_bytes(gzip.compress(b"".join(lines[:120])))
    (tmp_path / "exposures-2.jsonl").write_bytes(b"".join(lines[120:]))
    out = io.StringIO()
    assert main_with_out(["report", str(tmp_path / "exposures-*"), str(conv), "--json"], out) == 0
    data = orjson.loads(out.getvalue())
    assert data["exposure_files"] == [str(tmp_path / "exposures-1.jsonl.gz"), str(tmp_path / "exposures-2.jsonl")]
    assert [(a["visitors"], a["conversions"]) for a in data["experiments"][0]["arms"]] == [(100, 10), (100, 20)]


def test_each_variant_shows_the_always_valid_p_value_and_interval_beside_the_fixed_one(tmp_path):
    exp, conv = split_logs(tmp_path, {"control": (4000, 400), "promo": (4000, 560)})
    out = io.StringIO()
    assert main_with_out(["report", str(exp), str(conv), "--json"], out) == 0
    promo = orjson.loads(out.getvalue())["experiments"][0]["arms"][1]
    lo, hi = promo["seq_abs_uplift_ci"]
    assert lo < promo["abs_uplift_ci"][0] and hi > promo["abs_uplift_ci"][1]  # the price of looking at any time
    assert promo["seq_p_value"] >= promo["p_value"]
    text = io.StringIO()
    assert main_with_out(["report", str(exp), str(conv)], text) == 0
    assert "seq 95% CS (pp)" in text.getvalue()
    assert "If you look every day, go by the sequential columns instead" in " ".join(text.getvalue().split())


def test_plan_with_logs_gives_the_days_at_the_observed_traffic(tmp_path):
    exp, conv = split_logs(tmp_path, {"control": (2000, 60), "promo": (2000, 66)})  # one visitor a second
    out = io.StringIO()
    assert main_with_out(["report", str(exp), str(conv), "--plan", "--mde", "0.1", "--json"], out) == 0
    plan = orjson.loads(out.getvalue())["experiments"][0]["plan"]
    assert plan["baseline"] == 0.03 and plan["baseline_source"] == "observed control rate"
    assert plan["visitors_per_arm"] == 53_182
    assert plan["visitors_per_day"] == 4000  # an hour of logs counts as a day
    assert plan["days"] == 27


def test_plan_skips_an_experiment_whose_observed_rate_cannot_take_the_mde(tmp_path):
    # Regression: a control converting 95 % and --mde 0.1 (a 104.5 % target) raised a traceback.
    exp, conv = split_logs(tmp_path, {"control": (100, 95), "promo": (100, 96)})
    out = io.StringIO()
    assert main_with_out(["report", str(exp), str(conv), "--plan", "--mde", "0.1", "--json"], out) == 0
    (experiment,) = orjson.loads(out.getvalue())["experiments"]
    assert experiment["plan"] is None
    assert experiment["plan_problem"].startswith("the control converts 95.00% of its visitors")
    text = io.StringIO()
    assert main_with_out(["report", str(exp), str(conv), "--plan", "--mde", "0.1"], text) == 0
    assert "plan: none, the control converts 95.00%" in text.getvalue()


def test_html_charts_the_enrolment_per_arm_by_day(tmp_path):
    exposures = [exposure(f"v{i}", ("control", "promo")[i % 2], T0 + i * 3 * 3600) for i in range(40)]  # five days
    exp = write_jsonl(tmp_path / "e.jsonl", exposures)
    target = tmp_path / "r.html"
    assert main(["report", str(exp), "--html", str(target)]) == 0
    page = target.read_text(encoding="utf-8")
    assert page.count("<polyline") == 2 and "<title>promo: 20 visitors</title>" in page
    assert "Visitors enrolled so far, per arm" in page


@pytest.mark.parametrize("size", ["lots", "512", "1GB'; DROP"])
def test_a_bad_memory_limit_is_rejected_naming_the_flag(tmp_path, size):
    exp, _ = split_logs(tmp_path, {"control": (1, 0)})
    with pytest.raises(SettingsError, match="a size such as 448MB") as info:
        main_with_out(["report", str(exp), "--memory-limit", size], io.StringIO())
    assert info.value.key == "--memory-limit"


def test_a_small_memory_limit_still_gives_the_same_report(tmp_path):
    exp, conv = split_logs(tmp_path, {"control": (3000, 300), "promo": (3000, 330)})
    small, default = io.StringIO(), io.StringIO()
    assert main_with_out(["report", str(exp), str(conv), "--json", "--memory-limit", "128MB"], small) == 0
    assert main_with_out(["report", str(exp), str(conv), "--json"], default) == 0
    assert small.getvalue() == default.getvalue()


def test_a_memory_limit_too_small_for_duckdb_exits_2_saying_so(tmp_path, capsys):
    exp, conv = split_logs(tmp_path, {"control": (10, 1)})
    assert main(["report", str(exp), str(conv), "--memory-limit", "8MB"]) == 2
    assert "--memory-limit 8MB is too small for DuckDB's buffers (try 256MB or more)" in capsys.readouterr().err
