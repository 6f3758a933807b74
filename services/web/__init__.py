"""The web service: the dashboard and HTTP API (FastAPI), with live updates over server-sent events."""
