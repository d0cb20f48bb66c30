"""Sending jobs to providers: request building per provider, signed hook URLs, and the submission worker."""
