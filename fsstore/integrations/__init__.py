"""Adapters that plug fsstore into agent frameworks' storage interfaces, one module per
framework, each an optional extra (docs/INTEGRATIONS.md)."""
