from django.db import models


class Note(models.Model):
    """Lives in each tenant's schema only: written from the wrong schema, it fails."""

    text = models.CharField(max_length=100)
    schema = models.CharField(max_length=63)

    def __str__(self) -> str:
        return self.text
