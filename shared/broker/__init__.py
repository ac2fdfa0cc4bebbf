"""The broker side: the one Celery configuration and the client that sends tasks by name."""
