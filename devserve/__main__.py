"""``python -m devserve`` and the ``devserve`` console script (what IDE run configurations
call).

``devserve gevent`` monkey-patches before anything else is imported, devserve's own modules
included: this module imports nothing before deciding. A phoenix reload re-runs the same
command line, so every new image is patched first too.
"""

import sys


def main() -> int:
    if sys.argv[1:2] == ["gevent"]:
        try:
            from gevent import monkey
        except ImportError:
            pass  # the gevent command says how to install it
        else:
            monkey.patch_all()
    from devserve.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
