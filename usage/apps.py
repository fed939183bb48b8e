from django.apps import AppConfig
from django.db.models.signals import pre_delete


class UsageConfig(AppConfig):
    name = "usage"

    def ready(self) -> None:
        from accounts.models import Account, ApiKey, Machine
        from usage.writer import lock_before_delete

        # Events reference these rows without a database constraint (``usage.models``).
        for model in (Account, ApiKey, Machine):
            pre_delete.connect(
                lock_before_delete, sender=model, dispatch_uid=f"usage-lock-{model.__name__}"
            )
