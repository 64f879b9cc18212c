"""Locust users for the scoring API (HTTP only: nothing of the project is imported).

    locust -f loadtests/locustfile.py --host http://localhost:3000
    python loadtests/run.py            # headless run with pass/fail thresholds (make loadtest)

At test start the stocks are discovered through the API itself: a sample of BSE codes
(the simulator's 700001...) is scored with batch_predict on each of the latest
LOADTEST_SESSIONS sessions (default 5, what the service warms: VCP_WARM_SESSIONS); stocks
scoreable on all of them make the pool, so every request of the run should answer 200.
Other dates would be computed on demand (1-2 s on the first request) and are left out.

Environment: LOADTEST_API_KEY (sent as X-API-Key), LOADTEST_SESSIONS, LOADTEST_SAMPLE
(codes probed, default 2000), LOADTEST_BATCH (stocks per batch_predict, default 20),
LOADTEST_CODES (comma-separated BSE codes: use these instead of discovering), LOADTEST_THINK_MS
(think time "min,max" in ms, default "50,150"; "0,0" sends back to back).
"""

from __future__ import annotations

import logging
import os
import random
from datetime import date, timedelta

import requests
from locust import HttpUser, between, events, task

log = logging.getLogger("loadtest")

API_KEY = os.environ.get("LOADTEST_API_KEY", "")
HEADERS = {"X-API-Key": API_KEY} if API_KEY else {}
SESSIONS = int(os.environ.get("LOADTEST_SESSIONS", "5"))
SAMPLE = int(os.environ.get("LOADTEST_SAMPLE", "2000"))
BATCH = int(os.environ.get("LOADTEST_BATCH", "20"))
# Think time between a user's requests, milliseconds "min,max" (0,0: back to back, a flood).
THINK = [float(x) / 1000 for x in os.environ.get("LOADTEST_THINK_MS", "50,150").split(",")]

POOL: dict[str, list] = {"codes": [], "dates": []}


def _batch(host: str, codes: list[str], when: str | None) -> dict:
    body: dict = {"stocks": [{"bse_code": c} for c in codes]}
    if when:
        body["prediction_date"] = when
    r = requests.post(f"{host}/api/v1/batch_predict", json=body, headers=HEADERS, timeout=120)
    r.raise_for_status()
    return r.json()


def discover(host: str, seed: int = 1) -> tuple[list[str], list[str]]:
    """(scoreable BSE codes, the latest SESSIONS session dates) found through the API."""
    health = requests.get(f"{host}/api/v1/health", headers=HEADERS, timeout=30).json()
    latest = date.fromisoformat(health["data_as_of"])
    universe = int(health["universe_size"])
    env_codes = [c.strip() for c in os.environ.get("LOADTEST_CODES", "").split(",") if c.strip()]
    rng = random.Random(seed)
    sample = sorted(rng.sample(range(universe), min(SAMPLE, universe)))
    candidates = env_codes or [f"{700001 + i:06d}" for i in sample]
    first = _batch(host, candidates[:100], None)["results"]
    if not first:
        raise RuntimeError("none of the first 100 sampled stocks can be scored")
    probe = [first[0]["bse_code"]]
    # The last SESSIONS sessions: walk back a day at a time; the API snaps a date to a session.
    dates: list[str] = []
    day = latest
    while len(dates) < SESSIONS and day > latest - timedelta(days=7 * SESSIONS):
        got = _batch(host, probe, day.isoformat())["results"]
        if got and got[0]["as_of_date"] not in dates:
            dates.append(got[0]["as_of_date"])
        day -= timedelta(days=1)
    if env_codes:
        return env_codes, dates
    ok = set(candidates)
    for when in dates:
        good: set[str] = set()
        for i in range(0, len(candidates), 100):
            res = _batch(host, candidates[i:i + 100], when)
            good |= {x["bse_code"] for x in res["results"]}
        ok &= good
    return sorted(ok), dates


@events.test_start.add_listener
def _on_start(environment, **_kw):
    codes, dates = discover(environment.host.rstrip("/"))
    if not codes or not dates:
        raise RuntimeError("no scoreable stocks or sessions found through the API")
    POOL["codes"], POOL["dates"] = codes, dates
    log.info("load test pool: %d stocks, sessions %s", len(codes), ", ".join(dates))


class _ApiUser(HttpUser):
    abstract = True
    wait_time = between(THINK[0], THINK[-1])  # think time: a client, not a flood (see README)

    def on_start(self):
        self.client.headers.update(HEADERS)

    def _when(self) -> dict:
        # Half the requests take the default (latest) date, the rest one of the recent ones.
        return {} if random.random() < 0.5 else {"prediction_date": random.choice(POOL["dates"])}


class PredictUser(_ApiUser):
    weight = 6

    @task
    def predict(self):
        body = {"bse_code": random.choice(POOL["codes"]), **self._when()}
        self.client.post("/api/v1/predict", json=body, name="predict")


class BatchPredictUser(_ApiUser):
    weight = 1

    @task
    def batch_predict(self):
        stocks = [{"bse_code": c} for c in random.sample(POOL["codes"], BATCH)]
        with self.client.post("/api/v1/batch_predict", json={"stocks": stocks, **self._when()},
                              name="batch_predict", catch_response=True) as r:
            if r.status_code == 200 and r.json()["errors"]:
                r.failure(f"per-stock errors: {r.json()['errors'][:2]}")


class HealthUser(_ApiUser):
    weight = 1
    wait_time = between(0.05, 0.15)

    @task
    def health(self):
        with self.client.get("/api/v1/health", name="health", catch_response=True) as r:
            if r.status_code == 200 and r.json()["status"] != "ok":
                r.failure(f"health is {r.json()['status']}: {r.json()['reasons']}")
