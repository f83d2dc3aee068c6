"""devserve's engine, private.

- one HTTP/1.1 connection (``connection``), the request checks (``checks``), a request's trip
  through the app (``response``) and what they share (``wire``);
- the modes: ``threaded`` (with its request threads, ``pool``), ``prefork`` (the master and
  its workers) and ``gevent``;
- the children toolkit (``children``) and the prefork master's companions (``cron_workers``,
  ``evented_child``);
- the watch backends (``backends``), behind the facade ``devserve.watcher``.

Only ``devserve.runtime`` (the composition root) and the design card's top-level modules
(``servers``, ``reloader``, ``watcher``) import it; the addons platform never reaches it
(``tests/unit/test_architecture.py`` checks it)."""
