"""Adapters that plug fsstore into agent frameworks, one module per framework."""
