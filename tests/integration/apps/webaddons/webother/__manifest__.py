{
    "name": "Web other",
    "version": "0.3",
    "depends": ["webtest"],
    "summary": "Fixture of test_web.py: a second addon, after webtest in dependency order.",
}
