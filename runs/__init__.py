"""Projects, members, tasks, runs, executions, events, logs and the audit log."""
