{
    "name": "Hello",
    "version": "1.0",
    "depends": [],
    "summary": "The example addon: pages, a converter, a JSON-RPC route, an RPC service.",
}
