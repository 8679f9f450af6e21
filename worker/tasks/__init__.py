"""Celery task bodies; imported only by worker processes (the API enqueues by name)."""
