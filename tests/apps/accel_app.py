"""An app that hands file downloads to porch with X-Accel-Redirect, as a Django view would."""


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path.startswith("/download/"):
        name = path[len("/download/"):]
        start_response(
            "200 OK",
            [
                ("Content-Type", "text/html; charset=utf-8"),
                ("X-Accel-Redirect", "/protected/" + name),
                ("Content-Disposition", f'attachment; filename="{name}"'),
                ("Set-Cookie", "seen=1"),
            ],
        )
        return [b"this body is replaced by the file"]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"app:" + path.encode()]
