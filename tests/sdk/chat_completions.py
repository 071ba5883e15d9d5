"""Drives Mesh's `/v1/chat/completions` with the official OpenAI Python SDK, unmodified (only
base_url points at Mesh): `chat.completions.create` whole and with `stream=True` (with and
without `stream_options.include_usage`), the `chat.completions.stream(...)` helper, a two-turn
function-calling round trip (whole and streamed) and `chat.completions.parse` with a Pydantic
schema.

Usage: chat_completions.py BASE_URL API_KEY PREFIX EXPECTED_TEXT
The catalog holds PREFIX/plain (answers EXPECTED_TEXT), PREFIX/tools-one (calls get_weather for
Paris, then answers with the tool's output), PREFIX/json (answers {"answer": 42}).
Exits non-zero, with a message, on the first mismatch.
"""
import json
import sys

from openai import OpenAI
from pydantic import BaseModel

base_url, api_key, prefix, expected = sys.argv[1:5]
plain, tools_model, json_model = f"{prefix}/plain", f"{prefix}/tools-one", f"{prefix}/json"
client = OpenAI(base_url=base_url, api_key=api_key, max_retries=0)
hello = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}]

completion = client.chat.completions.create(model=plain, messages=hello)
assert completion.object == "chat.completion", completion
assert completion.id.startswith("chatcmpl-"), completion.id
assert completion.model == plain, completion.model
choice = completion.choices[0]
assert choice.message.content == expected, choice.message.content
assert choice.message.role == "assistant" and choice.finish_reason == "stop", choice
assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens > 0, completion.usage
assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens

chunks = list(client.chat.completions.create(model=plain, messages=hello, stream=True))
text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
assert text == expected, f"stream=True: {text!r}"
assert all(c.usage is None for c in chunks), "no usage unless asked"
assert chunks[-1].choices[0].finish_reason == "stop", chunks[-1]
assert {c.id for c in chunks} == {chunks[0].id} and chunks[0].model == plain

chunks = list(
    client.chat.completions.create(
        model=plain, messages=hello, stream=True, stream_options={"include_usage": True}
    )
)
assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0, chunks[-1]
assert chunks[-1].usage.prompt_tokens == completion.usage.prompt_tokens

with client.chat.completions.stream(model=plain, messages=hello) as stream:
    deltas = [e.delta for e in stream if e.type == "content.delta"]
    final = stream.get_final_completion()
assert "".join(deltas) == expected and final.choices[0].message.content == expected, final

# Function calling round trip: the SDK's own assistant message goes back as history.
tools = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
                "additionalProperties": False,
            },
        },
    }
]
question = {"role": "user", "content": "What is the weather in Paris?"}


def check_call(message):
    assert message.tool_calls and len(message.tool_calls) == 1, message
    call = message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather", call
    assert json.loads(call.function.arguments) == {"city": "Paris"}, call.function.arguments
    return call


first = client.chat.completions.create(model=tools_model, messages=[question], tools=tools)
assert first.choices[0].finish_reason == "tool_calls", first.choices[0]
call = check_call(first.choices[0].message)
answer = {"role": "tool", "tool_call_id": call.id, "content": "18C and sunny"}
second = client.chat.completions.create(
    model=tools_model, messages=[question, first.choices[0].message, answer], tools=tools
)
assert "18C and sunny" in second.choices[0].message.content, second.choices[0].message

with client.chat.completions.stream(model=tools_model, messages=[question], tools=tools) as stream:
    for _ in stream:
        pass
    streamed = stream.get_final_completion()
call = check_call(streamed.choices[0].message)
answer = {"role": "tool", "tool_call_id": call.id, "content": "18C and sunny"}
chunks = list(
    client.chat.completions.create(
        model=tools_model, messages=[question, streamed.choices[0].message, answer], tools=tools, stream=True
    )
)
text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
assert "18C and sunny" in text, text


class Answer(BaseModel):
    answer: int


parsed = client.chat.completions.parse(
    model=json_model, messages=[{"role": "user", "content": "The answer?"}], response_format=Answer
)
assert parsed.choices[0].message.parsed == Answer(answer=42), parsed.choices[0].message

print("chat-sdk-ok")
