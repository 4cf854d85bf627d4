"""``--retry-ocr``: which tier an OCR reconversion runs at, which converted documents get one, and
how a retried document's first conversion is kept in its record (``quality.ocr_retry``).

Must not: run conversions or touch OUTPUT (``run`` resubmits the document's tasks).
"""

from __future__ import annotations

from .sniff import FLASH_ONLY_TYPES, IMAGE_TYPES, PDF_TYPES

OCR_TIERS = ("basic", "standard", "advanced")


def ocr_retry_tier(run_tier: str, probe=None) -> tuple[str | None, str]:
    """The tier a ``--retry-ocr`` reconversion runs at, and why: the run's tier when it has
    OCR (basic and up), else ``basic`` when its models are on disk, else ``(None, reason)``
    naming what is missing and the download command. ``probe(tier) -> TierModels``
    (``models.tier_models``) is injectable for tests; it is only called for a flash run."""
    if run_tier in OCR_TIERS:
        return run_tier, f"tier {run_tier} has OCR"
    if probe is None:
        from .models import tier_models as probe
    try:
        tm = probe("basic")
    except Exception as exc:  # noqa: BLE001 - a failed probe means no OCR, not a crash
        return None, (f"--retry-ocr needs tier basic (OCR) and its models; checking them failed: "
                      f"{type(exc).__name__}: {exc}")
    if tm.ready:
        return "basic", "tier basic models are present"
    missing = ", ".join(tm.missing_names()) or "its models"
    return None, (f"--retry-ocr needs tier basic (OCR) and its models, which are missing here ({missing}); "
                  f"download them with: {tm.download_command or 'mineru-kit models download --tier basic'}")


def ocr_retry_decision(kind: str | None, quality: dict, *, retry_ocr: bool, ocr_mode: str,
                       ocr_tier: str | None, why_not: str) -> tuple[bool, str]:
    """Whether a converted document is reconverted with ``ocr_mode="ocr"``, and why (the
    reason is '' when there is nothing to say). Only documents flagged ``no_text`` or
    ``garbled_text`` are retried, once, and only PDFs and images: Office/HTML/EPUB/CSV files
    have no pixels to OCR. ``ocr_tier``/``why_not`` come from ``ocr_retry_tier``."""
    flags = [f for f in ("no_text", "garbled_text") if quality.get(f)]
    if not retry_ocr or not flags:
        return False, ""
    if kind in FLASH_ONLY_TYPES:
        return False, f"--retry-ocr: OCR does not apply to {kind} files"
    if ocr_mode == "ocr":
        return False, "--retry-ocr: already converted with OCR"
    if ocr_tier is None:
        return False, why_not
    return True, f"--retry-ocr: {' and '.join(flags)}: reconverting at tier {ocr_tier} with ocr_mode=ocr"


def assign_ocr_tier(states: list, run_tier: str, warn) -> None:
    """Give each document about to be converted (``run.DocState`` s) the tier its OCR
    reconversion would run at, when one is a PDF or an image (:func:`ocr_retry_tier`, asked once);
    ``warn(line)`` hears when no OCR tier is available."""
    if not any(st.planned.source.kind in PDF_TYPES or st.planned.source.kind in IMAGE_TYPES for st in states):
        return
    ocr_tier, why_not = ocr_retry_tier(run_tier)
    if ocr_tier is None:
        warn(f"{why_not}; flagged documents keep their first result")
    for st in states:
        st.ocr_tier, st.ocr_why_not = ocr_tier, why_not


def begin_retry(st, why: str, quality: dict) -> None:
    """Turn ``st`` (a ``run.DocState`` whose first conversion was flagged) into its OCR
    reconversion: the first conversion is kept for the record, the tier and OCR mode change,
    and its page windows start afresh. The caller then submits its tasks again."""
    p, r = st.planned, st.report
    st.ocr_first = {"reason": why, "first": {"tier": p.tier, "ocr_mode": p.ocr_mode, "pages": r.pages,
                                             "quality": quality}}
    st.attempts.append({"attempt": 1, "status": "flagged", "code": "retry_ocr", "reason": why, "seconds": 0.0})
    p.tier, p.ocr_mode = st.ocr_tier, "ocr"
    st.window_dirs, st.windows_left = [], 0
    r.tier = p.tier


def note_outcome(quality: dict, ocr_first: dict | None, why: str) -> None:
    """Record in ``quality`` what ``--retry-ocr`` did: the first conversion when it retried
    (``ocr_first``), else why not (``why``, when there is something to say)."""
    if ocr_first is not None:
        quality["ocr_retry"] = {"done": True, **ocr_first}
    elif why:
        quality["ocr_retry"] = {"done": False, "reason": why}
