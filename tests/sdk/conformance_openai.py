"""Conformance of Mesh's /v1/responses with the official OpenAI Python SDK, unmodified (only
base_url points at Mesh): create, stream, the `responses.stream()` helper, `responses.parse`,
retrieve, input items, delete, errors and `previous_response_id`.

Usage: conformance_openai.py BASE_URL API_KEY PREFIX EXPECTED_TEXT (see conformance_common.py)
"""
from openai import APIError, BadRequestError, NotFoundError, OpenAI
from pydantic import BaseModel

from conformance_common import Cases, arguments

base_url, api_key, prefix, expected = arguments()
client = OpenAI(base_url=base_url, api_key=api_key, max_retries=0)
plain, tools_model, json_model = f"{prefix}/plain", f"{prefix}/tools-one", f"{prefix}/json"
cases = Cases("python-sdk")

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                   "additionalProperties": False},
    "strict": True,
}


class Answer(BaseModel):
    answer: int


@cases.case
def create():
    response = client.responses.create(model=plain, input="Say hello")
    assert response.output_text == expected, response.output_text
    assert response.model == plain, response.model
    assert response.status == "completed" and response.usage.output_tokens > 0, response


@cases.case
def stream():
    events = list(client.responses.create(model=plain, input="Say hello", stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed", kinds
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == expected, text
    assert events[-1].response.output_text == expected, events[-1].response


@cases.case
def stream_helper():
    with client.responses.stream(model=plain, input="Say hello") as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert text == expected, text
    assert final.output_text == expected and final.model == plain, final


@cases.case
def stream_helper_tool_call():
    with client.responses.stream(model=tools_model, input="Weather in Paris?", tools=[WEATHER]) as stream:
        done = [e for e in stream if e.type == "response.function_call_arguments.done"]
        final = stream.get_final_response()
    call = final.output[-1]
    assert call.type == "function_call" and call.name == "get_weather" and call.call_id, call
    assert call.arguments.replace(" ", "") == '{"city":"Paris"}', call.arguments
    assert done and done[0].arguments == call.arguments, done
    parsed = final.output[-1].parsed_arguments
    assert parsed == {"city": "Paris"}, parsed


@cases.case
def parse():
    parsed = client.responses.parse(model=json_model, input="The answer?", text_format=Answer)
    assert parsed.output_parsed == Answer(answer=42), parsed.output_parsed


@cases.case
def stream_parse():
    with client.responses.stream(model=json_model, input="The answer?", text_format=Answer) as stream:
        for _ in stream:
            pass
        final = stream.get_final_response()
    assert final.output_parsed == Answer(answer=42), final.output_parsed


@cases.case
def incomplete():
    response = client.responses.create(model=f"{prefix}/length", input="Tell me a long story")
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens", response
    assert response.output_text, f"no partial output: {response.output}"
    events = list(client.responses.create(model=f"{prefix}/length", input="Tell me a long story", stream=True))
    assert events[-1].type == "response.incomplete", [e.type for e in events]
    assert events[-1].response.output_text == response.output_text, events[-1].response.output


@cases.case
def stream_error():
    """A provider stream that breaks off: the SDK raises APIError (an `error` event), or the
    stream ends with `response.failed` carrying the error (facts 2.2)."""
    events = []
    try:
        for event in client.responses.create(model=f"{prefix}/stream-error", input="Tell me a story", stream=True):
            events.append(event)
    except APIError as err:
        assert err.message, err
        assert "response.completed" not in [e.type for e in events], [e.type for e in events]
        return
    assert events[-1].type == "response.failed", f"a broken stream ends with {[e.type for e in events]}"
    failed = events[-1].response
    assert failed.status == "failed" and failed.error and failed.error.message, failed


@cases.case
def retrieve():
    created = client.responses.create(model=plain, input="Say hello")
    stored = client.responses.retrieve(created.id)
    assert stored.id == created.id and stored.output_text == expected, stored
    assert stored.status == "completed", stored.status


@cases.case
def input_items():
    created = client.responses.create(model=plain, input="Say hello")
    items = client.responses.input_items.list(created.id)
    assert len(items.data) == 1, items
    item = items.data[0]
    assert item.type == "message" and item.role == "user", item
    assert item.id, f"input item without an id: {item}"
    assert item.status == "completed", f"input item status: {item.status!r}"
    assert item.content[0].type == "input_text", item.content
    assert item.content[0].text == "Say hello", item.content
    raw = client.responses.input_items.with_raw_response.list(created.id).http_response.json()
    for key in ("type", "id", "status"):
        assert key in raw["data"][0], f"input item lacks `{key}`: {raw['data'][0]}"
    assert raw["first_id"] == item.id and raw["last_id"] == item.id and raw["has_more"] is False, raw


@cases.case
def delete():
    created = client.responses.create(model=plain, input="Say hello")
    client.responses.delete(created.id)
    try:
        client.responses.retrieve(created.id)
    except NotFoundError:
        return
    raise AssertionError("a deleted response can still be retrieved")


@cases.case
def error_400():
    try:
        client.responses.create(model=plain, input="Say hello", temperature=3)
    except BadRequestError as err:
        assert err.status_code == 400 and err.code == "invalid_value" and err.param == "temperature", err.body
        assert "temperature" in err.body["message"] and err.body["message"] in err.message, err.message
        return
    raise AssertionError("temperature 3 was accepted")


@cases.case
def error_404():
    missing = "resp_00000000000000000000000000"
    for call in (client.responses.retrieve, client.responses.input_items.list):
        try:
            call(missing)
        except NotFoundError as err:
            assert err.code == "response_not_found" and missing in err.body["message"], err.body
            assert err.body["message"] in err.message, err.message
            continue
        raise AssertionError(f"{call} of an unknown id succeeded")


@cases.case
def previous_response_id():
    first = client.responses.create(model=plain, input="My name is Ada.")
    second = client.responses.create(model=plain, input="What is my name?", previous_response_id=first.id)
    assert second.output_text == expected, second.output_text
    assert second.previous_response_id == first.id, f"previous_response_id echoed as {second.previous_response_id!r}"
    stored = client.responses.retrieve(second.id)
    assert stored.previous_response_id == first.id, f"stored previous_response_id {stored.previous_response_id!r}"


@cases.case
def previous_response_id_streamed():
    first = client.responses.create(model=plain, input="My name is Ada.")
    events = list(client.responses.create(model=plain, input="What is my name?", previous_response_id=first.id,
                                          stream=True))
    for event in (events[0], events[-1]):
        echoed = event.response.previous_response_id
        assert echoed == first.id, f"{event.type} echoes previous_response_id {echoed!r}"
    with client.responses.stream(model=plain, input="And now?", previous_response_id=first.id) as stream:
        for _ in stream:
            pass
        final = stream.get_final_response()
    assert final.previous_response_id == first.id, f"responses.stream: {final.previous_response_id!r}"


cases.finish()
