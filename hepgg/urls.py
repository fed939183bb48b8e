"""URLs of the gateway site. On a skills host (``SKILLS_HOSTS``) ``skills.middleware`` swaps in
``skills.urls`` at the root instead; everywhere else the skills site lives under ``/skills/``."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from account_api import schema  # noqa: F401 - registers the OpenAPI extensions
from catalog.views import public_models, public_prices
from hepgg import health
from hepgg.home import home

admin.site.site_header = "hepgg dashboard"
admin.site.site_title = "hepgg"
admin.site.index_title = "Credentials, skills, models and usage"

urlpatterns = [
    path("", home),
    path("healthz", health.healthz),
    path("readyz", health.readyz),
    path("models", public_models),
    path("prices", public_prices),
    path("admin/analytics/", include("analytics.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("admin/", admin.site.urls),
    path("skills/", include("skills.urls")),
    path("ccas/", include("ccas_cli.urls")),
    path("", include("account_api.urls")),
]
