"""pgqueue.http, the documented import path of pgqueue.contrib.http (where the code lives), and the module a
worker imports to find the job named pgqueue.http.request."""

from pgqueue.contrib.http import *  # noqa: F403
