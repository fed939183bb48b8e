from django.apps import AppConfig


class LlmGatewayConfig(AppConfig):
    name = "llm_gateway"
