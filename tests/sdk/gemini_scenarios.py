"""Drives a Gemini-served model through Mesh with the official OpenAI Python SDK, unmodified:
plain text and a two-turn function-calling round trip, each complete and streamed.

Usage: gemini_scenarios.py BASE_URL API_KEY TEXT_MODEL TOOLS_MODEL EXPECTED_TEXT
Exits non-zero, with a message, on the first mismatch.
"""
import json
import sys

from openai import OpenAI

base_url, api_key, text_model, tools_model, expected = sys.argv[1:6]
client = OpenAI(base_url=base_url, api_key=api_key, max_retries=0)

# Plain text, complete.
response = client.responses.create(model=text_model, input="Say hello", instructions="Be brief.")
assert response.status == "completed", response.status
assert response.output_text == expected, f"create: {response.output_text!r}"
assert response.model == text_model, f"create model: {response.model!r}"
assert (response.usage.input_tokens, response.usage.output_tokens) == (12, 7), response.usage
assert response.usage.input_tokens_details.cached_tokens == 4, response.usage
assert response.usage.output_tokens_details.reasoning_tokens == 2, response.usage

# Plain text, streamed: raw events, then the SDK's own accumulation.
events = list(client.responses.create(model=text_model, input="Say hello", stream=True))
kinds = [e.type for e in events]
assert kinds[0] == "response.created" and kinds[-1] == "response.completed", kinds
text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
assert text == expected, f"stream=True: {text!r}"
assert events[-1].response.output_text == expected

with client.responses.stream(model=text_model, input="Say hello") as stream:
    for _ in stream:
        pass
    final = stream.get_final_response()
assert final.output_text == expected, f"responses.stream: {final.output_text!r}"
assert final.model == text_model

tools = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Current weather of a city",
        "strict": True,
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    }
]
question = {"role": "user", "content": "Weather in Paris?"}
tool_answer = 'Tool said: {"temp_c":18}'


def only_call(output):
    calls = [item for item in output if item.type == "function_call"]
    assert len(calls) == 1, output
    call = calls[0]
    assert call.name == "get_weather", call
    assert json.loads(call.arguments) == {"city": "Paris"}, call.arguments
    assert call.call_id.startswith("call_"), call.call_id
    return call


def result_of(call):
    return {"type": "function_call_output", "call_id": call.call_id, "output": json.dumps({"temp_c": 18})}


# Round trip, complete: the whole first output goes back (as the SDK docs show), so the
# reasoning item carrying Gemini's thought signature returns too.
first = client.responses.create(model=tools_model, input=[question], tools=tools)
call = only_call(first.output)
second = client.responses.create(model=tools_model, input=[question, *first.output, result_of(call)], tools=tools)
assert second.status == "completed", second.status
assert second.output_text == tool_answer, f"round trip: {second.output_text!r}"

# Round trip, streamed: only the call goes back, as a plain dict.
with client.responses.stream(model=tools_model, input=[question], tools=tools) as stream:
    for _ in stream:
        pass
    first = stream.get_final_response()
call = only_call(first.output)
sent_call = {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments}
events = list(
    client.responses.create(model=tools_model, input=[question, sent_call, result_of(call)], tools=tools, stream=True)
)
assert events[-1].type == "response.completed", [e.type for e in events]
text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
assert text == tool_answer, f"streamed round trip: {text!r}"
assert events[-1].response.output_text == tool_answer

print("gemini-sdk-ok")
