"""The ASGI application: ``hepgg.asgi:application`` (a Channels ``ProtocolTypeRouter``).

The hot paths (``/v1``, ``/anthropic`` and the skills site's reads) are plain ASGI applications
routed ahead of Django's request stack; everything else (account API, admin, skills imports) is
the Django ASGI handler.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hepgg.settings")

from django.core.asgi import get_asgi_application

django_asgi_app = get_asgi_application()  # sets Django up before the routing imports below

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import re_path  # noqa: E402

from hepgg.lib.redaction import install_server_log_redaction  # noqa: E402
from hepgg.lifespan import lifespan, startup  # noqa: E402
from llm_gateway.routing import urlpatterns as gateway_routes  # noqa: E402
from proxy.routing import urlpatterns as proxy_routes  # noqa: E402
from skills.asgi import skills_site  # noqa: E402

install_server_log_redaction()
startup()  # daphne sends no lifespan events: start-up work runs when the app is loaded

application = ProtocolTypeRouter(
    {
        "http": URLRouter(
            # skills_site answers the skills site's reads itself and hands the rest to Django.
            [*gateway_routes, *proxy_routes, re_path(r"", skills_site(django_asgi_app))]
        ),
        "lifespan": lifespan,
    }
)
