"""Losses (registry `LOSSES`)."""
