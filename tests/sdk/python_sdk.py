"""Drives Mesh with the official OpenAI Python SDK, unmodified (only base_url points at Mesh).

Usage: python_sdk.py BASE_URL API_KEY MODEL EXPECTED_TEXT
Exits non-zero, with a message, on the first mismatch.
"""
import sys

from openai import OpenAI

base_url, api_key, model, expected = sys.argv[1:5]
client = OpenAI(base_url=base_url, api_key=api_key, max_retries=0)

response = client.responses.create(model=model, input="Say hello")
assert response.output_text == expected, f"create: {response.output_text!r}"
assert response.model == model, f"create model: {response.model!r}"
assert response.usage.output_tokens > 0

events = list(client.responses.create(model=model, input="Say hello", stream=True))
kinds = [e.type for e in events]
assert kinds[0] == "response.created" and kinds[-1] == "response.completed", kinds
text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
assert text == expected, f"stream=True: {text!r}"
assert events[-1].response.output_text == expected

with client.responses.stream(model=model, input="Say hello") as stream:
    for _ in stream:
        pass
    final = stream.get_final_response()
assert final.output_text == expected, f"responses.stream: {final.output_text!r}"
assert final.model == model

try:
    OpenAI(base_url=base_url, api_key="rsk_01JDEVKEY00000000000000000", max_retries=0).responses.create(
        model=model, input="x"
    )
    raise AssertionError("an unknown key was accepted")
except Exception as err:  # the SDK raises AuthenticationError carrying our envelope
    assert getattr(err, "status_code", None) == 401, repr(err)
    assert err.body["code"] == "invalid_api_key", err.body

print("python-sdk-ok")
