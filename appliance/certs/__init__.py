"""Certificates: the self-signed fallback (and, later, ACME)."""
