{"name": "Cron demo", "version": "1.0", "summary": "Cron jobs for tests/integration/test_cron.py."}
