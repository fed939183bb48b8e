"""The ASGI application: ``hepgg.asgi:application`` (a Channels ``ProtocolTypeRouter``).

The hot paths (``/v1``, ``/anthropic`` and the skills site's reads) are plain ASGI applications
routed ahead of Django's request stack; everything else (account API, admin, skills imports) is
the Django ASGI handler, behind ``bounded_bodies`` (each route's body limit, enforced before
Django reads the body). All of it sits behind ``header_limit`` (a total request header size,
431 in each surface's shape).
"""

import gc
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hepgg.settings")

from django.core.asgi import get_asgi_application

django_asgi_app = get_asgi_application()  # sets Django up before the routing imports below

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import re_path  # noqa: E402

from hepgg.lib.bodylimit import bounded_bodies  # noqa: E402
from hepgg.lib.headerlimit import header_limit  # noqa: E402
from hepgg.lib.redaction import install_server_log_redaction  # noqa: E402
from hepgg.lifespan import lifespan, startup  # noqa: E402
from llm_gateway.app import gateway_app  # noqa: E402
from llm_gateway.routing import urlpatterns as gateway_routes  # noqa: E402
from proxy.forward import proxy_app  # noqa: E402
from proxy.routing import urlpatterns as proxy_routes  # noqa: E402
from skills.asgi import skills_site, urlconf_for  # noqa: E402
from usage.embedded import start_embedded_rollups  # noqa: E402

install_server_log_redaction()
startup()  # daphne sends no lifespan events: start-up work runs when the app is loaded
start_embedded_rollups()  # only without a Celery worker (USAGE_ROLLUP_IN_WEB)

django_app = bounded_bodies(django_asgi_app, urlconf_for=urlconf_for)

routed = ProtocolTypeRouter(
    {
        # header_limit: 431 for oversized request headers, before any route (every surface).
        "http": header_limit(
            URLRouter(
                # skills_site answers the skills site's reads itself and hands the rest to Django.
                [*gateway_routes, *proxy_routes, re_path(r"", skills_site(django_app))]
            )
        ),
        "lifespan": lifespan,
    }
)


_gateway, _proxy = header_limit(gateway_app), header_limit(proxy_app)


async def application(scope, receive, send):
    """The two hot paths go straight to their apps (the same routes ``routed`` has, without its
    two routers' work on every request: measured a few per cent of a relayed request's CPU)."""
    if scope["type"] == "http" and not scope.get("root_path"):
        path = scope["path"]
        if path.startswith("/v1/"):
            return await _gateway(scope, receive, send)
        if path.startswith("/anthropic/"):
            return await _proxy(scope, receive, send)
    return await routed(scope, receive, send)


# What is loaded by now lives as long as the process: frozen out of the collector's sight, the
# full collections that usage records waiting for their flush set off walk only what requests
# made (measured at c32: 0.05 s of collecting per 4 s window, 0.02 s frozen; bench/README.md).
gc.freeze()
