"""The Celery app: ``celery -A hepgg.celery worker`` runs the tasks, ``celery -A hepgg.celery
beat`` schedules them (``CELERY_BEAT_SCHEDULE`` in settings). Without ``REDIS_URL`` tasks run
eagerly in-process and no worker or beat is needed (settings)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hepgg.settings")

app = Celery("hepgg")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
