from django.db import models


class Run(models.Model):
    """One execution of a demo task, written by the task itself; tests count these."""

    tag = models.CharField(max_length=200, db_index=True)
    pid = models.IntegerField()
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.tag} (pid {self.pid})"
