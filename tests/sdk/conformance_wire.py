"""Strict conformance of Mesh's raw /v1/responses wire with the OpenAI Python SDK's own types.

The SDK builds its models leniently (`construct`), so a missing field only shows up when a client
touches it. Here every raw body is validated with `Response.model_validate(..., strict=False)`,
the fields OpenAI always sends (required but nullable, facts O1) must be present, and every
stream event must be a member of the SDK's `ResponseStreamEvent` union, validate as that member,
and follow the order the SDK stream accumulators enforce (facts S1-S8, 2.2).

Usage: conformance_wire.py BASE_URL API_KEY PREFIX EXPECTED_TEXT (see conformance_common.py)
"""
import json
import typing

import httpx
from openai.types.responses import Response, ResponseItem, ResponseStreamEvent
from pydantic import TypeAdapter, ValidationError

from conformance_common import Cases, arguments

base_url, api_key, prefix, expected = arguments()
http = httpx.Client(base_url=base_url, headers={"authorization": f"Bearer {api_key}"}, timeout=30)
plain, tools_model, json_model = f"{prefix}/plain", f"{prefix}/tools-one", f"{prefix}/json"
cases = Cases("wire")
soft = cases.soft

WEATHER = {"type": "function", "name": "get_weather", "description": "Current weather in a city", "strict": True,
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                          "additionalProperties": False}}
JSON_FORMAT = {"format": {"type": "json_schema", "name": "answer", "strict": True,
                          "schema": {"type": "object", "properties": {"answer": {"type": "integer"}},
                                     "required": ["answer"], "additionalProperties": False}}}

# Required on the wire, though nullable (facts O1: openai-node declares them non-optional).
ALWAYS = ["id", "object", "created_at", "model", "output", "error", "incomplete_details", "instructions", "metadata",
          "parallel_tool_calls", "temperature", "tool_choice", "tools", "top_p"]
# The union's members by their `type` literal.
EVENT_TYPES = {
    typing.get_args(member.model_fields["type"].annotation)[0]: member
    for member in typing.get_args(typing.get_args(ResponseStreamEvent)[0])
}
LIFECYCLE = {"response.created", "response.in_progress", "response.queued", "response.completed",
             "response.incomplete", "response.failed"}
TERMINAL = {"response.completed", "response.incomplete", "response.failed"}
ITEM_ADAPTER = TypeAdapter(ResponseItem)


def check_response(body, where):
    """The raw Response object validates as the SDK's model and has every field OpenAI sends."""
    missing = [field for field in ALWAYS if field not in body]
    soft(not missing, f"{where}: response lacks {missing}")
    validate(Response, body, where)
    usage = body.get("usage")
    if usage is not None:
        details = usage.get("input_tokens_details") or {}
        soft("cache_write_tokens" in details, f"{where}: usage.input_tokens_details lacks cache_write_tokens")
    for item in body.get("output") or []:
        soft(item.get("id"), f"{where}: output item without id: {item}")
        for part in item.get("content") or []:
            if part.get("type") == "output_text":
                soft(isinstance(part.get("annotations"), list), f"{where}: output_text without annotations: {part}")
    return body


# Fields with a check of their own, whose missing-field errors are not repeated.
CHECKED = {"cache_write_tokens", "logprobs", "name"}


def validate(model, value, where):
    """`model.model_validate(value, strict=False)`, each failure a problem of the case (the
    `response` of lifecycle events is validated on its own, by `check_response`)."""
    try:
        model.model_validate(value, strict=False)
    except ValidationError as err:
        for problem in err.errors():
            loc = problem["loc"]
            if (where in LIFECYCLE and loc[:1] == ("response",)) or (loc and loc[-1] in CHECKED and problem["type"] == "missing"):
                continue
            got = "" if problem["type"] == "missing" else f" (got {json.dumps(problem.get('input'))[:80]})"
            soft(False, f"{where}: {model.__name__}.{'.'.join(map(str, loc))}: {problem['msg'][:120]}{got}")


def post(body):
    response = http.post("/responses", json=body)
    assert response.status_code == 200, f"{response.status_code}: {response.text[:300]}"
    assert response.headers["content-type"].startswith("application/json"), response.headers["content-type"]
    return check_response(response.json(), "create")


def sse(body):
    """The (event name, data) frames of a streamed answer."""
    frames = []
    with http.stream("POST", "/responses", json={**body, "stream": True}) as response:
        assert response.status_code == 200, f"{response.status_code}: {response.read()[:300]}"
        assert response.headers["content-type"].startswith("text/event-stream"), response.headers["content-type"]
        name, data = None, []
        for line in response.iter_lines():
            if line == "":
                if data:
                    frames.append((name, "\n".join(data)))
                name, data = None, []
            elif line.startswith(":"):
                continue
            elif line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
    return [(name, json.loads(data)) for name, data in frames if data != "[DONE]"]


def check_stream(frames):
    """Every event as the SDK types and stream accumulators require; returns the final response."""
    events = [data for _, data in frames]
    assert events, "empty stream"
    for index, (name, event) in enumerate(frames):
        kind = event.get("type")
        where = f"event {index} {kind}"
        soft(name == kind, f"{where}: the `event:` line says {name!r}")
        soft(kind in EVENT_TYPES, f"{where}: not a member of the SDK's ResponseStreamEvent union")
        soft(kind == "error" or "error" not in event, f"{where}: a top-level `error` key makes the SDKs raise")
        if kind in EVENT_TYPES:
            validate(EVENT_TYPES[kind], event, kind)
        if kind in ("response.output_text.delta", "response.output_text.done"):
            soft(isinstance(event.get("logprobs"), list), f"{kind}: lacks `logprobs` (a list)")
        if kind == "response.function_call_arguments.done":
            soft(event.get("name"), f"{kind}: lacks `name`")
        if kind in LIFECYCLE:
            check_response(event["response"], kind)
    numbers = [e["sequence_number"] for e in events]
    soft(numbers == list(range(numbers[0], numbers[0] + len(numbers))), f"sequence numbers {numbers}")

    first = events[0]
    assert first["type"] == "response.created", f"first event {first['type']}"
    created = first["response"]
    soft(created["status"] in ("in_progress", "queued"), f"response.created: status {created['status']}")
    soft(created["output"] == [], f"response.created: output {created['output']}")
    soft(created.get("usage") is None, f"response.created carries usage {created.get('usage')}")
    terminals = [i for i, e in enumerate(events) if e["type"] in TERMINAL]
    assert terminals == [len(events) - 1], f"terminal events at {terminals} of {len(events)}"

    items, ids = [], set()
    for index, event in enumerate(events):
        kind = event["type"]
        where = f"event {index} {kind}"
        if kind == "response.output_item.added":
            item = event["item"]
            assert event["output_index"] == len(items), f"{where}: output_index {event['output_index']}, {len(items)} items so far"
            assert item.get("id") and item["id"] not in ids, f"{where}: empty or duplicate id {item.get('id')!r}"
            if item["type"] == "function_call":
                assert item.get("call_id"), f"{where}: function_call without call_id"
            ids.add(item["id"])
            items.append({**item, "content": [], "text": "", "arguments": ""})
            continue
        if "output_index" not in event:
            continue
        assert event["output_index"] < len(items), f"{where}: output_index {event['output_index']} before its item was added"
        item = items[event["output_index"]]
        if "item_id" in event:
            assert event["item_id"] == item["id"], f"{where}: item_id {event['item_id']} but the item at that index is {item['id']}"
        if kind == "response.content_part.added":
            assert event["content_index"] == len(item["content"]), f"{where}: content_index {event['content_index']}, {len(item['content'])} parts so far"
            item["content"].append("")
        elif kind.startswith("response.output_text.") or kind.startswith("response.content_part."):
            assert item["type"] == "message", f"{where} on a {item['type']} item"
            assert event["content_index"] < len(item["content"]), f"{where}: content_index {event['content_index']} before content_part.added"
            if kind == "response.output_text.delta":
                item["content"][event["content_index"]] += event["delta"]
            if kind == "response.output_text.done":
                soft(event["text"] == item["content"][event["content_index"]], f"{where}: text differs from the deltas")
        elif kind.startswith("response.function_call_arguments."):
            assert item["type"] == "function_call", f"{where} on a {item['type']} item"
            if kind.endswith(".delta"):
                item["arguments"] += event["delta"]
            else:
                soft(event["arguments"] == item["arguments"], f"{where}: arguments differ from the deltas")
                soft("name" not in event or event["name"] == item.get("name"), f"{kind}: name {event.get('name')!r}, item {item.get('name')!r}")
        elif kind == "response.output_item.done":
            done = event["item"]
            for key in ("type", "id", "call_id"):
                soft(done.get(key) == item.get(key), f"{where}: {key} {done.get(key)!r} differs from the added item's {item.get(key)!r}")
            if done.get("type") in ("message", "function_call"):  # reasoning items may omit it
                soft(done.get("status") in ("completed", "incomplete"), f"{kind} ({done['type']}): status {done.get('status')!r}")
            item["done"] = done

    final = events[-1]["response"]
    output = final["output"]
    assert [i["id"] for i in output] == [i["id"] for i in items], f"terminal output ids {[i['id'] for i in output]} vs streamed {[i['id'] for i in items]}"
    for item, streamed in zip(output, items):
        soft(streamed.get("done") == item, f"output_item.done {streamed.get('done')} differs from the terminal output {item}")
    if events[-1]["type"] == "response.completed":
        soft(final["status"] == "completed", f"response.completed: status {final['status']}")
        soft(final.get("usage"), "response.completed without usage")
        soft(final.get("completed_at"), "response.completed without completed_at")
    return final


def text_of(response):
    return "".join(p["text"] for i in response["output"] if i["type"] == "message" for p in i["content"]
                   if p["type"] == "output_text")


@cases.case
def create_text():
    body = post({"model": plain, "input": "Say hello"})
    assert text_of(body) == expected and body["status"] == "completed", body


@cases.case
def create_tool_call():
    body = post({"model": tools_model, "input": "Weather in Paris?", "tools": [WEATHER]})
    call = body["output"][-1]
    assert call["type"] == "function_call" and call["name"] == "get_weather" and call["call_id"], call
    soft(body.get("tools") and body["tools"][0].get("name") == "get_weather", f"tools echoed as {body.get('tools')}")


@cases.case
def create_json_schema():
    body = post({"model": json_model, "input": "The answer?", "text": JSON_FORMAT})
    assert json.loads(text_of(body)) == {"answer": 42}, body
    soft((body.get("text") or {}).get("format", {}).get("type") == "json_schema", f"text echoed as {body.get('text')}")


@cases.case
def stream_text():
    final = check_stream(sse({"model": plain, "input": "Say hello"}))
    assert text_of(final) == expected, final


@cases.case
def stream_tool_call():
    final = check_stream(sse({"model": tools_model, "input": "Weather in Paris?", "tools": [WEATHER]}))
    assert final["output"][-1]["type"] == "function_call", final["output"]


@cases.case
def stream_tool_round_trip():
    first = post({"model": tools_model, "input": "Weather in Paris?", "tools": [WEATHER]})
    call = first["output"][-1]
    final = check_stream(sse({"model": tools_model, "tools": [WEATHER], "previous_response_id": first["id"],
                              "input": [{"type": "function_call_output", "call_id": call["call_id"],
                                         "output": "18C and sunny"}]}))
    assert "18C and sunny" in text_of(final), final


@cases.case
def stream_json_schema():
    final = check_stream(sse({"model": json_model, "input": "The answer?", "text": JSON_FORMAT}))
    assert json.loads(text_of(final)) == {"answer": 42}, final


@cases.case
def incomplete():
    body = post({"model": f"{prefix}/length", "input": "Tell me a long story"})
    soft(body["status"] == "incomplete", f"status {body['status']}")
    soft(body.get("incomplete_details") == {"reason": "max_output_tokens"}, f"incomplete_details {body.get('incomplete_details')}")
    soft(text_of(body), f"no partial output: {body['output']}")
    final = check_stream(sse({"model": f"{prefix}/length", "input": "Tell me a long story"}))
    soft(final["status"] == "incomplete", f"streamed: terminal status {final['status']}")
    soft(final.get("incomplete_details") == {"reason": "max_output_tokens"}, f"streamed: incomplete_details {final.get('incomplete_details')}")
    soft(text_of(final), f"streamed: the terminal event carries no output: {final['output']}")
    soft(all(i.get("status") == "incomplete" for i in final["output"] if i["type"] == "message"),
         f"streamed: the cut message's status is not incomplete: {final['output']}")


@cases.case
def stream_error():
    """A provider stream that breaks off: an `error` event with the flat fields of the SDK's
    ResponseErrorEvent and the nested `error` live OpenAI sends (facts S1), or `response.failed`
    carrying the error and the partial output."""
    frames = sse({"model": f"{prefix}/stream-error", "input": "Tell me a story"})
    events = [data for _, data in frames]
    numbers = [e.get("sequence_number") for e in events]
    soft(numbers == list(range(numbers[0], numbers[0] + len(numbers))), f"sequence numbers {numbers}")
    soft(events[0]["type"] == "response.created", f"first event {events[0]['type']}")
    for name, event in frames:
        soft(name == event.get("type"), f"`event: {name}` carries a {event.get('type')} payload")
        soft(event.get("type") in EVENT_TYPES, f"{event.get('type')}: not a member of the SDK's ResponseStreamEvent union")
        soft(event.get("type") == "error" or "error" not in event, f"{event.get('type')}: a top-level `error` key")
    kinds = [e["type"] for e in events]
    soft(not any(k in ("response.completed", "response.incomplete") for k in kinds), f"a broken stream ends {kinds[-1]}")
    errors = [e for e in events if e["type"] == "error"]
    failed = [e for e in events if e["type"] == "response.failed"]
    assert errors or failed, f"neither an error event nor response.failed: {kinds}"
    assert kinds[-1] in ("error", "response.failed"), f"the stream goes on after the error: {kinds}"
    for event in errors:
        validate(EVENT_TYPES["error"], event, "error")
        soft(isinstance(event.get("message"), str) and event["message"], f"error event without the flat `message`: {event}")
        soft("code" in event, f"error event without the flat `code`: {event}")
        nested = event.get("error")
        soft(isinstance(nested, dict) and nested.get("message") and "type" in nested and "code" in nested,
             f"error event without the nested `error` object live OpenAI sends: {event}")
    for event in failed:
        response = check_response(event["response"], "response.failed")
        soft(response["status"] == "failed", f"response.failed: status {response['status']}")
        soft((response.get("error") or {}).get("code") and (response.get("error") or {}).get("message"),
             f"response.failed without error {{code, message}}: {response.get('error')}")
        soft(response.get("incomplete_details") is None, f"response.failed: incomplete_details {response.get('incomplete_details')}")
        soft(text_of(response), f"response.failed drops the partial output: {response['output']}")


@cases.case
def retrieve():
    created = post({"model": plain, "input": "Say hello"})
    response = http.get(f"/responses/{created['id']}")
    assert response.status_code == 200, response.text
    stored = check_response(response.json(), "retrieve")
    assert stored["id"] == created["id"] and stored["output"] == created["output"], stored


@cases.case
def input_items():
    created = post({"model": plain, "input": [{"role": "user", "content": "Say hello"}]})
    response = http.get(f"/responses/{created['id']}/input_items")
    assert response.status_code == 200, response.text
    page = response.json()
    for key in ("object", "data", "first_id", "last_id", "has_more"):
        assert key in page, f"input_items lacks `{key}`: {page}"
    for item in page["data"]:
        for key in ("type", "id", "status"):
            soft(key in item, f"input item lacks `{key}`: {item}")
        try:
            ITEM_ADAPTER.validate_python(item, strict=False)
        except ValidationError as err:
            soft(False, f"input item is no ResponseItem ({len(err.errors())} errors): {item}")
    soft(page["data"][0]["content"] == [{"type": "input_text", "text": "Say hello"}],
         f"input item content {page['data'][0]['content']}")


@cases.case
def previous_response_id():
    first = post({"model": plain, "input": "My name is Ada."})
    second = post({"model": plain, "input": "What is my name?", "previous_response_id": first["id"]})
    soft(second.get("previous_response_id") == first["id"], f"echoed as {second.get('previous_response_id')!r}")
    final = check_stream(sse({"model": plain, "input": "What is my name?", "previous_response_id": first["id"]}))
    soft(final.get("previous_response_id") == first["id"], f"streamed: echoed as {final.get('previous_response_id')!r}")


@cases.case
def request_fields_echoed():
    sent = {"model": plain, "input": "Say hello", "instructions": "Be brief.", "temperature": 0.5, "top_p": 0.9,
            "max_output_tokens": 300, "metadata": {"team": "conformance"}, "tool_choice": "auto"}
    body = post(sent)
    for field in ("instructions", "temperature", "top_p", "max_output_tokens", "metadata", "tool_choice"):
        soft(body.get(field) == sent[field], f"{field} echoed as {body.get(field)!r}, sent {sent[field]!r}")
    soft(body.get("user") is None, f"the response names a user nobody sent: {body.get('user')!r}")


@cases.case
def errors_before_the_first_byte():
    for stream in (False, True):
        response = http.post("/responses", json={"model": plain, "input": "x", "temperature": 3, "stream": stream})
        assert response.status_code == 400, response.status_code
        assert response.headers["content-type"].startswith("application/json"), response.headers["content-type"]
        error = response.json()["error"]
        for key in ("message", "type", "param", "code"):
            assert key in error, f"error envelope lacks `{key}`: {error}"
    response = http.get("/responses/resp_00000000000000000000000000")
    assert response.status_code == 404 and response.json()["error"]["code"] == "response_not_found", response.text


cases.finish()
