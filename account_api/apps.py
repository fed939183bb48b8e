from django.apps import AppConfig


class AccountApiConfig(AppConfig):
    name = "account_api"
    verbose_name = "Account API"
    # The OpenAPI extensions (account_api.schema) are registered by hepgg.urls, which every
    # schema generation loads: imported here, drf-spectacular and what it pulls in (requests,
    # DRF's test client) would cost every process 12 MB of RSS for a page few ever open.
