"""The admin HTTP server: health, readiness and Prometheus metrics (more routes to come)."""

from pgcourier.admin.app import create_app

__all__ = ["create_app"]
