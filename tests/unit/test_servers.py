"""Telling the server from its command line, without starting one."""

from __future__ import annotations

import os

from herdtrace.collectors import servers


def test_python_servers_by_script_or_module() -> None:
    assert servers.python_server(["/v/bin/python", "/v/bin/gunicorn", "-w", "4", "app:wsgi"]) == "gunicorn"
    assert servers.python_server(["python3", "-m", "uvicorn", "app:asgi"]) == "uvicorn"
    assert servers.python_server(["python3", "/usr/bin/waitress-serve", "app:wsgi"]) == "waitress"
    assert servers.python_server(["/v/bin/python", "/v/bin/hypercorn", "-w", "4", "app:asgi"]) == "hypercorn"
    assert servers.python_server(["/v/bin/python", "/v/bin/granian", "--interface", "asgi"]) == "granian"
    assert servers.python_server(["python3", "-m", "http.server"]) is None
    assert servers.python_server(["python3", "app.py"]) is None


def test_options_in_every_spelling() -> None:
    argv = ["gunicorn", "-k", "gthread", "--workers=4"]
    assert servers.option(argv, "-k", "--worker-class") == "gthread"
    assert servers.option(argv, "--workers") == "4"
    assert servers.option(["gunicorn", "--worker-class=gevent"], "-k", "--worker-class") == "gevent"
    assert servers.option(argv, "--bind") is None


def test_this_process_is_no_server_herdtrace_knows() -> None:
    assert servers.identify([os.getpid()]) is None  # pytest under python
    assert servers.identify([999_999_999]) is None
