from django.apps import AppConfig


class CcasCliConfig(AppConfig):
    name = "ccas_cli"
