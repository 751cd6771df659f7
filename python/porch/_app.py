"""Helpers the worker extension calls while it loads the app."""

import ast


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
