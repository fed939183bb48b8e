"""Mounted at ``/admin/analytics/`` (``hepgg.urls``), behind the admin's staff login."""

from django.contrib import admin
from django.urls import path

from analytics import views

app_name = "analytics"
urlpatterns = [
    path("", admin.site.admin_view(views.dashboard), name="dashboard"),
    path("export.csv", admin.site.admin_view(views.export_csv), name="export"),
]
