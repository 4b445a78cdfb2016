"""Adapters that plug fsstore into agent frameworks' storage interfaces (optional extras)."""
