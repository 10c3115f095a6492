"""Artifacts produced by executions: storage, collection, download, baselines, image diffs."""
