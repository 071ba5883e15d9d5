"""Fires N concurrent POST /v1/responses from this process, alternating between gateways.

Usage: burst.py KEY MODEL N URL [URL ...]   Prints a JSON object: status code -> count.
"""
import json
import sys
import threading
import urllib.error
import urllib.request
from collections import Counter

key, model, n, urls = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
counts = Counter()
lock = threading.Lock()
start = threading.Barrier(n)


def fire(i):
    body = json.dumps({"model": model, "input": f"burst {i}"}).encode()
    request = urllib.request.Request(
        f"{urls[i % len(urls)]}/v1/responses",
        data=body,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    start.wait()
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status = response.status
    except urllib.error.HTTPError as err:
        status = err.code
    with lock:
        counts[str(status)] += 1


threads = [threading.Thread(target=fire, args=(i,)) for i in range(n)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps(counts))
