"""The benchmark's django.tasks tasks (Django 6.0+): W1's no-op and W3's stamp through the django.tasks API."""

import time

from django.tasks import task


@task(queue_name="bench")
def noop() -> None:
    return None


@task(queue_name="bench")
def stamp() -> float:
    return time.time()
