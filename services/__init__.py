"""Conveyor's domain: everything that decides or does the work, with no Flask or Celery in it."""
