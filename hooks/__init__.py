"""Webhooks: signed HTTP notifications of run status changes, per project (Standard Webhooks)."""
