"""The jobs app keeps its state on runs.Execution and runs.Attempt; no models of its own yet."""
