from django.apps import AppConfig


class AccountApiConfig(AppConfig):
    name = "account_api"
    verbose_name = "Account API"

    def ready(self) -> None:
        from account_api import schema  # noqa: F401 - registers the OpenAPI extensions
