from . import controllers  # noqa: F401  (importing registers the routes)
