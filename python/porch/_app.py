"""Helpers the worker extension calls while it loads the app."""

import ast
import inspect


def call_factory(factory, text):
    """Calls ``factory`` with the arguments written as ``text`` (``"prod", debug=True``).

    Only Python literals are allowed, as in Gunicorn's ``app:create_app("prod")``: the
    text is parsed, never executed.
    """
    try:
        call = ast.parse(f"f({text})", mode="eval").body
        args = [ast.literal_eval(a) for a in call.args]
        kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
        if any(k is None for k in kwargs):
            raise ValueError("**kwargs")
    except (SyntaxError, ValueError) as e:
        raise ValueError(
            f"the app factory's arguments ({text}) must be Python literals, "
            f'e.g. create_app("prod", debug=True): {e}'
        ) from None
    return factory(*args, **kwargs)


def check_wsgi(app, name):
    """With ``--interface wsgi``, refuses an ASGI app (an async callable) by name: called
    as WSGI it would answer every request with an error instead of failing once, here, at
    start-up."""
    call = app if inspect.isroutine(app) else getattr(type(app), "__call__", None)
    if inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(app):
        raise TypeError(
            f"{name} is an ASGI app (an async callable) but --interface wsgi was given: "
            "drop it (porch tells ASGI from WSGI at import) or use --interface asgi"
        )
    return app
