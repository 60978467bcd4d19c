"""Mailgate's benchmarks: ``python -m bench`` runs them all and prints one table; each module
also runs alone (``python -m bench.<name>``)."""
