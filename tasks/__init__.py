"""The Celery app: `celery -A tasks worker -Q video` turns a host into a transcode host."""

from celery import Celery
from celery.signals import setup_logging

from services.config import get_settings
from services.logs import configure_logging

app = Celery("conveyor")
app.config_from_object("celeryconfig")


@setup_logging.connect
def _json_logs(**_: object) -> None:
    configure_logging(get_settings().log_level)


__all__ = ["app"]
