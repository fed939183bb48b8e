from django.urls import path

from ccas_cli import views

urlpatterns = [
    path("install.sh", views.install_sh),
    path("ccas.pyz", views.ccas_pyz),
    path("ccas.pyz.sha256", views.ccas_pyz_sha256),
]
