"""Integrations with orchestrators and trackers (the only place Prefect is imported)."""
