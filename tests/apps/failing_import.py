"""An app module that cannot be imported: porch must stop at startup with this traceback."""


def refuse_to_import():
    raise RuntimeError("failing_import refuses to be imported")


refuse_to_import()


def application(environ, start_response):  # never reached
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"unreachable"]
