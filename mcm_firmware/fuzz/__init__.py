"""Fuzz campaigns against a live node over its real transport (``mcm-emu fuzz``)."""

from .campaign import CampaignResult, Finding, Probe, judge, replay, run_campaign

__all__ = ["CampaignResult", "Finding", "Probe", "judge", "replay", "run_campaign"]
