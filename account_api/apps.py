from django.apps import AppConfig


class AccountApiConfig(AppConfig):
    name = "account_api"
    verbose_name = "Account API"
