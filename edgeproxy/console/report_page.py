"""The live page's experiment report, as HTML: ``edgeproxy report --plan``'s
JSON per experiment, the sample-size progress and the reading rule.

Split from ``pages.py`` (which renders the console's other pages and the
shell around this one); values are escaped here (``_e``) as they enter the
markup.  Per arm (``E-A`` is ``EXPERIMENT-ARM``) the elements carry
``data-testid`` ``arm-E-A``, ``visitors-E-A``, ``conversions-E-A``,
``rate-E-A``, ``uplift-E-A``, ``uplift-ci-E-A``, ``p-E-A``, ``seq-p-E-A``,
``seq-ci-E-A``, ``progress-E-A``, ``verdict-E-A``, and per experiment
``needed-E``, ``per-day-E``, ``days-E``, ``days-left-E``, ``plan-E``,
``srm-E``; ``reading-rule`` once.  Their text is the report's JSON at
the precision shown (``tests/test_console.py`` holds them to it).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

from .live import DEFAULT_MDE, Progress, progress

_e = html.escape


def _pct(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{x * 100:.{digits}f}%"


def _ci(ci: Sequence[float] | None, *, signed: bool = False) -> str:
    if not ci:
        return ""
    lo, hi = ci
    if signed:
        return f"[{lo * 100:+.2f}, {hi * 100:+.2f}] pp"
    return f"[{lo * 100:.2f}%, {hi * 100:.2f}%]"


def _p(p: float | None) -> str:
    if p is None:
        return "–"
    return "< 0.0001" if p < 0.0001 else f"{p:.4f}"


def _n(n: float | int) -> str:
    return f"{n:,.0f}"


def _when(ts: str) -> str:
    """``2026-11-26T11:57:18Z`` -> ``2026-11-26 11:57 UTC``."""
    return ts[:16].replace("T", " ") + " UTC" if len(ts) >= 16 else ts


_BASIS = {"--slots": "the weights in the slots folder", "--weights": "the given weights", "equal split": "an equal split"}


def _excludes_zero(ci: Sequence[float] | None) -> int:
    """+1 / -1 when the interval lies above / below 0, else 0."""
    if not ci:
        return 0
    return 1 if ci[0] > 0 else -1 if ci[1] < 0 else 0


_SIDE_CLASS = {1: ' class="win"', -1: ' class="loss"', 0: ""}


def _verdict(arm: Mapping[str, Any], srm: Mapping[str, Any] | None, prog: Progress | None) -> str:
    """An arm against the control in plain words, by the report's reading
    rule: the sequential interval decides at any look; the fixed-horizon
    p-value only once every arm has the sample the plan needs."""
    name = f"<strong>{_e(str(arm.get('arm')))}</strong>"
    if srm and srm.get("flagged"):
        return f"{name}: not comparable with the control (sample ratio mismatch)."
    p, uplift, seq_p = arm.get("p_value"), arm.get("abs_uplift"), arm.get("seq_p_value")
    if uplift is None:
        return ""
    side = _excludes_zero(arm.get("seq_abs_uplift_ci"))
    if side:
        better = "beats the control" if side > 0 else "does worse than the control"
        return (f"{name} {better} ({uplift * 100:+.2f} pp; sequential p = {_p(seq_p)}, "
                "which holds however often you look).")
    if prog is not None and prog.reached and p is not None:
        if p < 0.05:
            better = "beats the control" if uplift > 0 else "does worse than the control"
            return f"{name} {better} at the planned sample size ({uplift * 100:+.2f} pp, fixed-horizon p = {_p(p)})."
        return (f"{name}: no clear difference at the planned sample size (fixed-horizon p = {_p(p)}): "
                "a change as large as the one planned for would most likely have shown by now.")
    text = f"{name}: no clear difference yet" + (f" (sequential p = {_p(seq_p)})" if seq_p is not None else "") + "; let it run"
    if prog is not None and prog.days_left:
        text += f", about {_days(prog.days_left)} at this traffic"
    text += "."
    if p is not None and p < 0.05:
        text += (f" The fixed-horizon p = {_p(p)} is not a win yet: it holds only at the planned sample size, "
                 "not at every look.")
    return text


def _days(n: int) -> str:
    """``92`` -> ``92 more days``; a long wait also in months or years."""
    text = f"{n:,} more day{'' if n == 1 else 's'}"
    if n >= 730:
        return f"{text} (about {n / 365:.0f} years)"
    if n >= 60:
        return f"{text} (about {n / 30.4:.0f} months)"
    return text


LONG_WAIT_DAYS = 90  # beyond this, the page says a larger change is what this traffic can detect


def _plan_html(name: str, exp: Mapping[str, Any], prog: Progress | None, *, decided: bool = False) -> str:
    """The sample-size paragraph: what the plan needs and how far along it
    is (``decided``: the sequential test has settled every variant, so
    nobody need wait for the rest)."""
    plan = exp.get("plan")
    tid = _e(name)
    if not plan or prog is None:
        why = exp.get("plan_problem") or "the control has no conversions yet, so there is no rate to plan from"
        return f'<p class="muted" data-testid="plan-{tid}">No sample size yet: {_e(why)}.</p>'
    target = plan["baseline"] * (1 + plan["mde"])
    comparisons = plan["arms"] - 1
    each = "" if comparisons == 1 else f"; {comparisons} variants against the control, each at α {plan['alpha'] / comparisons:.3g}"
    text = (
        f'<strong>Sample size.</strong> To detect a {abs(plan["mde"]) * 100:g}% change ({_pct(plan["baseline"])} → {_pct(target)}) '
        f'with {plan["power"] * 100:g}% power, each arm needs <strong data-testid="needed-{tid}">{_n(plan["visitors_per_arm"])}</strong> visitors '
        f'<span class="muted">(the observed control rate as the baseline{each})</span>. '
    )
    per_day = plan.get("visitors_per_day")
    if prog.reached:
        text += '<strong data-testid="days-left-{0}">Reached</strong>: every arm has its sample, so the fixed-horizon p-value may be read now.'.format(tid)
    elif prog.days_left is None or not per_day:
        text += f'<span data-testid="days-left-{tid}">No traffic yet to count the days by.</span>'
    else:
        text += (
            f'At the <span data-testid="per-day-{tid}">{_n(per_day)}</span> visitors a day seen so far: about '
            f'<strong data-testid="days-left-{tid}">{_days(prog.days_left)}</strong> '
            f'<span class="muted">(<span data-testid="days-{tid}">{_n(plan["days"])}</span> in all; '
            f'{plan["days_so_far"]:.1f} so far)</span>.'
        )
        if decided:
            text += " The sequential test has settled every variant already: there is no need to wait for the rest."
        elif prog.days_left > LONG_WAIT_DAYS:
            text += " That is a long wait: at this traffic only a larger change can be detected sooner (raise the smallest change above)."
    return f'<p data-testid="plan-{tid}">{text}</p>'


def _arm_row(name: str, arm: Mapping[str, Any], prog: Progress | None) -> str:
    tid = _e(f"{name}-{arm['arm']}")
    conv = "" if arm.get("conversions") is None else _n(arm["conversions"])
    visitors = f'<span data-testid="visitors-{tid}">{_n(arm["visitors"])}</span>'
    if prog is not None:
        share = min(arm["visitors"] / prog.needed, 1.0) if prog.needed else 1.0
        visitors += (
            f'<br><progress max="{prog.needed}" value="{min(arm["visitors"], prog.needed)}" aria-hidden="true"></progress> '
            f'<span class="muted nowrap" data-testid="progress-{tid}">{share * 100:.0f}% of {_n(prog.needed)}</span>'
        )
    rate = ""
    if arm.get("rate") is not None:
        rate = f'<span data-testid="rate-{tid}">{_pct(arm["rate"])}</span> <span class="ci">{_ci(arm.get("rate_ci"))}</span>'
    uplift = p = seq_p = seq_ci = ""
    if arm.get("abs_uplift") is not None:
        uplift = f'<span data-testid="uplift-{tid}">{arm["abs_uplift"] * 100:+.2f} pp</span> <span class="ci" data-testid="uplift-ci-{tid}">{_ci(arm.get("abs_uplift_ci"), signed=True)}</span>'
        if arm.get("rel_uplift") is not None:
            uplift += f'<br><span class="muted">{arm["rel_uplift"] * 100:+.1f}% relative</span>'
    if arm.get("p_value") is not None:
        p = f'<span data-testid="p-{tid}">{_p(arm["p_value"])}</span>{" (" + _e(arm["test"]) + ")" if arm.get("test") else ""}'
    if arm.get("seq_p_value") is not None:
        seq_p = f'<span data-testid="seq-p-{tid}">{_p(arm["seq_p_value"])}</span>'
        seq_ci = f'<span data-testid="seq-ci-{tid}">{_ci(arm.get("seq_abs_uplift_ci"), signed=True)}</span>'
    head = f'<tr data-testid="arm-{tid}"><th scope=row>{_e(arm["arm"])}</th><td class=num data-label="Visitors">{visitors}</td>'
    if arm.get("conversions") is None:  # no conversion log: visitors only
        return head + "</tr>"
    return (
        head + f'<td class=num data-label="Converted" data-testid="conversions-{tid}">{conv}</td>'
        f'<td class=num data-label="Rate [95% CI]">{rate}</td>'
        f'<td class=num data-label="Uplift vs control [95% CI]">{uplift}</td>'
        f'<td class=num data-label="Fixed-horizon p">{p}</td>'
        f'<td class="num seq" data-label="Sequential p">{seq_p}</td>'
        f'<td class="num seq" data-label="Sequential 95% interval">{seq_ci}</td></tr>'
    )


def _mde_form(mde: float, problem: str) -> str:
    described = ' aria-describedby="mde-problem" aria-invalid="true"' if problem else ""
    extra = f' <span id="mde-problem" class="problem">{_e(problem)}</span>' if problem else ""
    return (
        '<form class="mde" method="get" action="/console/live"><label for="f-mde">Smallest change worth detecting</label> '
        f'<input id="f-mde" name="mde" value="{mde * 100:g}" inputmode="decimal" size="4"{described}> % '
        f'<span class="muted">(relative: 10 % is 3 % → 3.3 %)</span> <button type="submit">Update</button>{extra}</form>'
    )


def report_html(report: Mapping[str, Any] | None, *, mde: float = DEFAULT_MDE, mde_problem: str = "") -> str:
    """``edgeproxy report --plan --mde MDE``'s figures per experiment (its
    JSON shape), the sample-size progress, and the report's reading rule."""
    if report is None:
        return (
            "<p>No exposure log is configured: start the proxy with <code>--exposure-log</code> "
            "(and <code>--conversion-log</code>) to see each experiment's report here.</p>"
        )
    parts = []
    if report.get("error"):
        parts.append(f'<p class="broken">{_e(report["error"])}</p>')
    if report.get("note"):
        parts.append(f'<p class="muted">{_e(report["note"])}</p>')
    experiments = report.get("experiments") or []
    if not experiments and not parts:
        parts.append("<p>No exposure logged yet.</p>")
    with_conversions = bool(report.get("conversion_files"))
    if experiments:
        if with_conversions:  # without conversions there is no rate to plan from
            parts.append(_mde_form(mde, mde_problem))
        command = f"edgeproxy report --plan --mde {mde:g}" if with_conversions else "edgeproxy report"
        parts.append(
            f'<p class="muted">As <code>{command}</code> computes them, at {_e(str(report.get("computed", "")))}.'
            + (" Each variant against the control, two-sided.</p>" if with_conversions else "</p>")
        )
        if with_conversions and report.get("reading_rule"):
            rule = str(report["reading_rule"])
            head, sep, rest = rule.partition(": ")
            rule_html = f"<strong>{_e(head)}:</strong> {_e(rest)}" if sep else _e(rule)
            parts.append(f'<p class="rule" data-testid="reading-rule">{rule_html}</p>')
    for exp in experiments:
        name = exp["name"]
        prog = progress(exp)
        slots = ", ".join(exp.get("slots") or [])
        parts.append(
            f'<section aria-labelledby="exp-{_e(name)}"><h3 id="exp-{_e(name)}">{_e(name)}</h3>'
            f'<p class="muted">{"Slot" if len(exp.get("slots") or []) == 1 else "Slots"} {_e(slots)} · '
            f'{_e(_when(str(exp.get("start", ""))))} to {_e(_when(str(exp.get("end", ""))))} · '
            f'{_n(exp.get("visitors", 0))} visitors, {_n(exp.get("exposures", 0))} exposures</p>'
        )
        srm = exp.get("srm")
        variants = [arm for arm in exp.get("arms", []) if arm.get("arm") != "control"]
        sides = {arm["arm"]: 0 if srm and srm.get("flagged") else _excludes_zero(arm.get("seq_abs_uplift_ci")) for arm in variants}
        items = "".join(
            f'<li data-testid="verdict-{_e(name)}-{_e(arm["arm"])}"{_SIDE_CLASS[sides[arm["arm"]]]}>{text}</li>'
            for arm in variants if (text := _verdict(arm, srm, prog))
        )
        if items:  # the answer first, the figures behind it after
            parts.append(f'<ul class="verdicts">{items}</ul>')
        rows = "".join(_arm_row(name, arm, prog) for arm in exp.get("arms", []))
        head = (  # the reading rule's two ways to read, over their columns
            '<tr class="groups"><td colspan=4></td><th scope=colgroup colspan=2>Fixed horizon: read once, at the planned sample</th>'
            '<th scope=colgroup colspan=2 class=seq>Sequential: read at any look</th></tr><tr>'
            "<th scope=col>Arm</th><th scope=col class=num>Visitors</th><th scope=col class=num>Converted</th>"
            "<th scope=col class=num>Rate [95% CI]</th><th scope=col class=num>Uplift vs control [95% CI]</th>"
            "<th scope=col class=num>Fixed-horizon p</th><th scope=col class=\"num seq\">Sequential p</th>"
            "<th scope=col class=\"num seq\">Sequential 95% interval</th></tr>"
        )
        if not with_conversions:
            head = "<tr><th scope=col>Arm</th><th scope=col class=num>Visitors</th></tr>"
        parts.append(f'<div class="scroll"><table class="cards report"><thead>{head}</thead><tbody>{rows}</tbody></table></div>')
        if with_conversions:
            parts.append(_plan_html(name, exp, prog, decided=bool(variants) and all(sides.values())))
        if srm:
            basis = _e(_BASIS.get(srm.get("basis", ""), srm.get("basis", "")))
            if srm.get("flagged"):
                parts.append(
                    f'<p class="broken" data-testid="srm-{_e(name)}"><strong>Sample ratio mismatch</strong> '
                    f'(p = {_p(srm.get("p_value"))} against {basis}): the arms are not comparable; '
                    "do not trust this result until the cause is found.</p>"
                )
            else:
                parts.append(f'<p class="muted" data-testid="srm-{_e(name)}">No sample ratio mismatch (p = {_p(srm.get("p_value"))} against {basis}).</p>')
        for warning in exp.get("warnings") or []:
            parts.append(f'<p class="muted">{_e(warning)}</p>')
        if not with_conversions:
            parts.append('<p class="muted">No conversion log: visitors and the SRM check only.</p>')
        parts.append("</section>")
    return "".join(parts)
