"""hepgg: an AI gateway. The Celery app lives in ``hepgg.celery`` and is imported by the worker
(``celery -A hepgg.celery worker``) and by the modules that define tasks, not here: importing
Celery and kombu into every web process would cost ~20 MB of RSS for nothing."""
