"""Artifact models arrive with artifact collection; the app exists so the layout is stable."""
