"""The dashboard: signed-in pages over the API's own functions (receiver/web/reads.py), live over server-sent
events."""
