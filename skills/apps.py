from django.apps import AppConfig
from django.db.models.signals import post_delete


class SkillsConfig(AppConfig):
    name = "skills"

    def ready(self) -> None:
        from skills.models import Skill
        from skills.registry import forget_deleted_skill

        post_delete.connect(forget_deleted_skill, sender=Skill, dispatch_uid="skill-deleted")
