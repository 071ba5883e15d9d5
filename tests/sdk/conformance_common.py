"""What the conformance clients share: the command line and a runner of named cases.

Every conformance script takes `BASE_URL API_KEY PREFIX EXPECTED_TEXT`; the gateway's catalog has
`PREFIX/plain` (answers EXPECTED_TEXT), `PREFIX/tools-one` (calls `get_weather` once, then answers
with the tool's output), `PREFIX/json` (answers `{"answer":42}`) and `PREFIX/history` (answers
with the conversation it received, `role:text | role:text ...`), `PREFIX/length` (a text cut by
the token limit: `incomplete`) and `PREFIX/stream-error` (streamed, the provider's stream breaks off
with an error after the first piece of text).

Each case runs even when an earlier one failed; the script prints `ok CLIENT NAME` or
`FAIL CLIENT NAME: why` per case (every problem a case found with `soft` checks, then what stopped
it, joined by ` || `) and exits 1 if any failed.
"""
import asyncio
import inspect
import sys
import time
import traceback


def arguments():
    base_url, api_key, prefix, expected = sys.argv[1:5]
    return base_url, api_key, prefix, expected


def summary(err):
    """One line saying why: a pydantic ValidationError names each field that failed."""
    if callable(getattr(err, "errors", None)) and hasattr(err, "title"):
        problems = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors()]
        return f"{err.title}: " + "; ".join(problems[:4]) + (f" (+{len(problems) - 4} more)" if len(problems) > 4 else "")
    lines = str(err).strip().splitlines()
    return lines[0] if lines else repr(err)


class Cases:
    def __init__(self, client):
        self.client = client
        self.failed = []
        self.problems = []

    def soft(self, condition, message):
        """A check that lets the case go on: every problem a case finds is reported at its end."""
        if not condition and message not in self.problems:
            self.problems.append(message)

    def case(self, function):
        name = function.__name__
        self.problems = []
        reasons = []
        started = time.monotonic()
        try:
            result = function()
            if inspect.isawaitable(result):
                asyncio.run(result)
        except Exception as err:  # report it and go on with the next case
            traceback.print_exc(file=sys.stderr)
            reasons.append(f"{type(err).__name__}: {summary(err)}")
        took = f"({time.monotonic() - started:.2f} s)"
        reasons = [f"AssertionError: {p}" for p in self.problems] + reasons
        if reasons:
            print(f"FAIL {self.client} {name} {took}: " + " || ".join(reasons), flush=True)
            self.failed.append(name)
        else:
            print(f"ok {self.client} {name} {took}", flush=True)
        return function

    def finish(self):
        if self.failed:
            print(f"{self.client}: {len(self.failed)} failed: {', '.join(self.failed)}", flush=True)
            sys.exit(1)
        print(f"{self.client}: all passed", flush=True)
