{
    "name": "Hello",
    "version": "1.0",
    "depends": [],
    "summary": "The example addon: an HTML page, a route with a converter, a static file.",
}
