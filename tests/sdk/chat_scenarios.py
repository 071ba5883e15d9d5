"""Drives Mesh, in front of a Chat Completions provider, with the official OpenAI Python SDK,
unmodified (only base_url points at Mesh): plain text and a two-turn function-calling round trip,
each with `responses.create`, `stream=True` iteration and `responses.stream(...)`.

Usage: chat_scenarios.py BASE_URL API_KEY TEXT_MODEL EXPECTED_TEXT TOOLS_MODEL CALL_ID EXPECTED_TOOL_ANSWER
Exits non-zero, with a message, on the first mismatch.
"""
import json
import sys

from openai import OpenAI

base_url, api_key, text_model, expected_text, tools_model, call_id, expected_tool_answer = sys.argv[1:8]
client = OpenAI(base_url=base_url, api_key=api_key, max_retries=0)

# Plain text: whole, `stream=True`, `responses.stream`.
response = client.responses.create(model=text_model, input="Say hello")
assert response.status == "completed", response.status
assert response.output_text == expected_text, f"create: {response.output_text!r}"
assert response.model == text_model, f"create model: {response.model!r}"
assert response.usage.input_tokens == 20 and response.usage.output_tokens == 10, response.usage
assert response.usage.input_tokens_details.cached_tokens == 4, response.usage

events = list(client.responses.create(model=text_model, input="Say hello", stream=True))
kinds = [e.type for e in events]
assert kinds[0] == "response.created" and kinds[-1] == "response.completed", kinds
text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
assert text == expected_text, f"stream=True: {text!r}"
assert events[-1].response.output_text == expected_text

with client.responses.stream(model=text_model, input="Say hello") as stream:
    for _ in stream:
        pass
    final = stream.get_final_response()
assert final.output_text == expected_text, f"responses.stream: {final.output_text!r}"
assert final.model == text_model

# Function calling round trip.
tools = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
        "strict": True,
    }
]
question = {"role": "user", "content": "What is the weather in Paris?"}


def check_call(output):
    calls = [item for item in output if item.type == "function_call"]
    assert len(calls) == 1 and len(output) == 1, output
    call = calls[0]
    assert call.call_id == call_id, call
    assert call.name == "get_weather", call
    assert json.loads(call.arguments) == {"city": "Paris"}, call.arguments
    return call


def tool_output():
    return {"type": "function_call_output", "call_id": call_id, "output": "18C and sunny"}


# Whole answers: the second turn sends back the SDK's own function_call object.
first = client.responses.create(model=tools_model, input=[question], tools=tools)
call = check_call(first.output)
second = client.responses.create(model=tools_model, input=[question, *first.output, tool_output()], tools=tools)
assert second.output_text == expected_tool_answer, f"round trip: {second.output_text!r}"

# Streamed: `stream=True` for the call, `responses.stream` for the answer.
events = list(client.responses.create(model=tools_model, input=[question], tools=tools, stream=True))
assert events[-1].type == "response.completed", [e.type for e in events]
streamed_args = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
call = check_call(events[-1].response.output)
assert streamed_args == call.arguments, (streamed_args, call.arguments)
with client.responses.stream(model=tools_model, input=[question, call, tool_output()], tools=tools) as stream:
    for _ in stream:
        pass
    final = stream.get_final_response()
assert final.output_text == expected_tool_answer, f"streamed round trip: {final.output_text!r}"

print("chat-scenarios-ok")
