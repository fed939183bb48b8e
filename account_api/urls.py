from django.urls import path

from account_api import views

urlpatterns = [
    path("me", views.MeView.as_view()),
    path("keys", views.KeysView.as_view()),
    path("keys/<uuid:public_id>", views.KeyDetailView.as_view()),
    path("sync/machines", views.MachinesView.as_view()),
    path("sync/machines/<uuid:public_id>", views.MachineDetailView.as_view()),
    path("usage", views.UsageView.as_view()),
]

# ccas (issue 10): transcript usage upload and listing, the machines' subscription limits.
urlpatterns += [
    path("sync/usage", views.SyncUsageView.as_view()),
    path("sync/rate-limits", views.SyncRateLimitsView.as_view()),
]
