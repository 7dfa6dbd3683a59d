"""Worker applications and helpers for the bridge tests (Celery and Dramatiq workers)."""
