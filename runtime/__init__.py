"""plugin-runtime: the supervisor that schedules and dispatches plugin tasks from PostgreSQL."""

__version__ = "0.1.0"
