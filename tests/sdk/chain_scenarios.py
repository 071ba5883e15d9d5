"""A `previous_response_id` chain of three turns through Mesh with the official OpenAI Python SDK,
unmodified: once with whole answers, once streamed (`stream=True`, then `responses.stream`).

Usage: chain_scenarios.py BASE_URL API_KEY MODEL EXPECTED_TEXT
Prints the ids of the last whole and the last streamed turn.
"""
import sys

from openai import OpenAI

base_url, api_key, model, expected = sys.argv[1:5]
client = OpenAI(base_url=base_url, api_key=api_key, max_retries=0)

previous = None
for question in ["My name is Ada.", "What is my name?", "Spell it."]:
    response = client.responses.create(model=model, input=question, previous_response_id=previous)
    assert response.output_text == expected, f"whole turn: {response.output_text!r}"
    assert response.previous_response_id == previous, response.previous_response_id
    previous = response.id
whole_last = previous

stored = client.responses.retrieve(whole_last)
assert stored.output_text == expected
items = client.responses.input_items.list(whole_last)
assert len(items.data) == 1 and items.data[0].role == "user", items
assert items.data[0].type == "message" and items.data[0].content[0].text == "Spell it.", items

previous = None
for turn, question in enumerate(["My name is Ada.", "What is my name?", "Spell it."]):
    if turn < 2:
        events = list(client.responses.create(model=model, input=question, previous_response_id=previous, stream=True))
        assert events[-1].type == "response.completed", events[-1].type
        final = events[-1].response
    else:
        with client.responses.stream(model=model, input=question, previous_response_id=previous) as stream:
            for _ in stream:
                pass
            final = stream.get_final_response()
    assert final.output_text == expected, f"streamed turn {turn}: {final.output_text!r}"
    assert final.previous_response_id == previous, final.previous_response_id
    previous = final.id

print(whole_last, previous)
