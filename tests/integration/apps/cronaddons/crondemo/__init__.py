"""Cron jobs for tests/integration/test_cron.py.

Each job appends lines "<word> <thread name> <time.time()>" to the file named by
CRONDEMO_LOG; CRONDEMO_JOBS (comma-separated) says which jobs are declared:

tick     every 0.3 s: "tick"
slow     every 0.2 s, runs 1 s: "start", then "end"
fail     every 0.3 s: "fail", then raises RuntimeError
overrun  every 10 s, runs 2.5 s: "start", then "end"
hang     every 0.2 s: "start", then sleeps for a minute

Each process image writes "boot" when it imports the addon.
"""

import os
import threading
import time

from devserve.cron import cron

LOG = os.environ["CRONDEMO_LOG"]
JOBS = os.environ.get("CRONDEMO_JOBS", "").split(",")


def mark(word):
    line = f"{word} {threading.current_thread().name} {time.time()!r}\n"
    with open(LOG, "a", encoding="utf-8") as file:  # one short append: never interleaved
        file.write(line)


def sleep_past_the_limit(seconds):
    time.sleep(seconds)


mark("boot")

if "tick" in JOBS:

    @cron(interval=0.3)
    def tick():
        mark("tick")


if "slow" in JOBS:

    @cron(interval=0.2)
    def slow():
        mark("start")
        time.sleep(1)
        mark("end")


if "fail" in JOBS:

    @cron(interval=0.3)
    def fail():
        mark("fail")
        raise RuntimeError("crondemo failure")


if "overrun" in JOBS:

    @cron(interval=10)
    def overrun():
        mark("start")
        sleep_past_the_limit(2.5)
        mark("end")


if "hang" in JOBS:

    @cron(interval=0.2)
    def hang():
        mark("start")
        time.sleep(60)
