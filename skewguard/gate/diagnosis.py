"""The diagnosis paragraph: what failed, in words, and the likely bug behind it.

A person reading a CI log should not have to decode a table to learn "your loss has its sign
flipped". Each failed check contributes its measured detail and its likely cause; a pass says what
was proven (memorised in S steps, gradients reach everything, no leaks across examples/positions).
"""

from __future__ import annotations

from collections.abc import Sequence

from skewguard.gate.checks import Finding
from skewguard.gate.report import AttemptOutcome, CheckName, OverfitAttempt


def _sentence(text: str) -> str:
    text = text.strip()
    return text if not text or text.endswith(".") else text + "."


def write_diagnosis(
    findings: Sequence[Finding],
    attempts: Sequence[OverfitAttempt],
    *,
    batch_size: int,
    floor: float,
    warnings: Sequence[str],
) -> str:
    """One paragraph: the verdict, then each failed check with its likely cause, then skips/warnings."""
    failed = [f for f in findings if not f.result.passed and not f.result.skipped]
    skipped = [f.result for f in findings if f.result.skipped]
    ran = [f for f in findings if not f.result.skipped]
    parts: list[str] = []
    if failed:
        names = ", ".join(f.result.name.value for f in failed)
        parts.append(f"The gate FAILED {len(failed)} of {len(ran)} checks that ran ({names}).")
        for finding in failed:
            parts.append(_sentence(f"Check {finding.result.name.value} failed: {finding.result.detail}"))
            if finding.likely_cause:
                parts.append(_sentence(f"Likely bug: {finding.likely_cause}"))
        passed = [f.result.name.value for f in ran if f.result.passed]
        if passed:
            parts.append(f"Checks that passed: {', '.join(passed)}.")
    else:
        win = next((a for a in attempts if a.outcome is AttemptOutcome.MEMORISED), None)
        proven = (
            f"the model memorised one cached batch of {batch_size} examples in {win.steps} steps at lr "
            f"{win.lr:.3g} (loss {win.final_loss:.4g}, floor {floor:.4g})"
            if win is not None
            else "the model passed"
        )
        claims = [proven]
        ran_names = {f.result.name for f in ran}
        if CheckName.GRADIENT_FLOW in ran_names:
            claims.append("every trainable tensor receives a gradient")
        if CheckName.BATCH_INDEPENDENCE in ran_names:
            claims.append("no example's output depends on another example")
        if CheckName.CAUSAL_DEPENDENCY in ran_names:
            claims.append("no position sees the future")
        if CheckName.GRADIENT_FRESHNESS in ran_names:
            claims.append("gradients are fresh every step")
        parts.append(f"The gate PASSED all {len(ran)} checks that ran: " + ", ".join(claims) + ".")
    if skipped:
        parts.append(
            "Skipped (not passed): " + "; ".join(f"{r.name.value} ({r.detail})" for r in skipped) + "."
        )
    if warnings:
        parts.append("Warnings raised while running the model: " + " | ".join(warnings) + ".")
    return " ".join(p for p in parts if p)
