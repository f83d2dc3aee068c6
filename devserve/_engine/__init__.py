"""devserve's engine, private: HTTP/1.1 connections and their checks, the threaded, prefork
and gevent servers, the children toolkit and the watch backends. Only ``devserve.runtime``
(the composition root) and the design card's top-level modules (``servers``, ``reloader``,
``watcher``, ``debug``) import it; the addons platform never does."""
