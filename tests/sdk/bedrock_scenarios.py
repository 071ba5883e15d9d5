"""Drives Mesh's `bedrock` provider with the official OpenAI Python SDK, unmodified (only base_url
points at Mesh, which translates to a stub of Amazon Bedrock's Converse and ConverseStream
operations, signing each call with SigV4).

Usage: bedrock_scenarios.py BASE_URL API_KEY TEXT_MODEL TOOLS_MODEL
Plain text and a two-turn function-calling round trip, each through `responses.create`,
`stream=True` iteration and `responses.stream(...)`. Exits non-zero on the first mismatch.
"""
import json
import sys

from openai import OpenAI

base_url, api_key, text_model, tools_model = sys.argv[1:5]
client = OpenAI(base_url=base_url, api_key=api_key, max_retries=0)

TEXT = "Hello from Bedrock"
CALL_ID = "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q"
TOOLS = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Current weather of a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
        "strict": True,
    }
]


def create(**params):
    return client.responses.create(**params)


def stream_true(**params):
    events = list(client.responses.create(stream=True, **params))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed", kinds
    final = events[-1].response
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == final.output_text, f"deltas {text!r} != final {final.output_text!r}"
    arguments = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    calls = [item for item in final.output if item.type == "function_call"]
    assert arguments == "".join(c.arguments for c in calls), f"argument deltas {arguments!r} != {calls}"
    return final


def stream_helper(**params):
    with client.responses.stream(**params) as stream:
        for _ in stream:
            pass
        return stream.get_final_response()


for name, run in [("create", create), ("stream=True", stream_true), ("responses.stream", stream_helper)]:
    response = run(model=text_model, input="Say hello")
    assert response.status == "completed", f"{name}: {response.status}"
    assert response.model == text_model, f"{name}: {response.model!r}"
    assert [item.type for item in response.output] == ["message"], f"{name}: {response.output}"
    assert response.output_text == TEXT, f"{name}: {response.output_text!r}"
    usage = response.usage
    assert (usage.input_tokens, usage.input_tokens_details.cached_tokens, usage.output_tokens) == (135, 100, 15), usage

    history = [{"role": "user", "content": "What's the weather in Paris?"}]
    first = run(model=tools_model, input=history, tools=TOOLS)
    assert [item.type for item in first.output] == ["message", "function_call"], f"{name}: {first.output}"
    assert first.output_text == "Let me check the weather.", f"{name}: {first.output_text!r}"
    call = first.output[1]
    assert (call.call_id, call.name, json.loads(call.arguments)) == (CALL_ID, "get_weather", {"city": "Paris"}), call

    history += first.output
    history.append({"type": "function_call_output", "call_id": call.call_id, "output": "18C and sunny"})
    second = run(model=tools_model, input=history, tools=TOOLS)
    assert [item.type for item in second.output] == ["message"], f"{name}: {second.output}"
    assert second.output_text == "The weather in Paris: 18C and sunny.", f"{name}: {second.output_text!r}"

print("bedrock-scenarios-ok")
