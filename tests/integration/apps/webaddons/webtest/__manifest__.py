{
    "name": "Web test",
    "version": "2.5",
    "depends": [],
    "summary": "Fixture of test_web.py: json and http routes, an RPC service, WSGI handlers.",
}
