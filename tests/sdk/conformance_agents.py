"""Conformance of Mesh's /v1/responses with the OpenAI Agents SDK for Python, unmodified
(`OpenAIResponsesModel` over an `AsyncOpenAI` client whose base_url is Mesh): `Runner.run` and
`Runner.run_streamed` with a function tool, `previous_response_id` across two runs and a pydantic
`output_type`.

Usage: conformance_agents.py BASE_URL API_KEY PREFIX EXPECTED_TEXT (see conformance_common.py)
"""
from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled
from openai import AsyncOpenAI
from pydantic import BaseModel

from conformance_common import Cases, arguments

base_url, api_key, prefix, expected = arguments()
set_tracing_disabled(True)
cases = Cases("agents")


def agent(model, **options):
    client = AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0)
    return Agent(name="assistant", instructions="You are helpful.",
                 model=OpenAIResponsesModel(model=f"{prefix}/{model}", openai_client=client), **options)


@function_tool
def get_weather(city: str) -> str:
    """Current weather in a city."""
    return "18C and sunny" if city == "Paris" else "unknown city"


class Answer(BaseModel):
    answer: int


@cases.case
async def run_plain():
    result = await Runner.run(agent("plain"), "Say hello")
    assert result.final_output == expected, result.final_output


@cases.case
async def run_with_tool():
    result = await Runner.run(agent("tools-one", tools=[get_weather]), "What is the weather in Paris?")
    assert "18C and sunny" in result.final_output, result.final_output
    calls = [item for item in result.new_items if item.type == "tool_call_item"]
    assert len(calls) == 1 and calls[0].raw_item.name == "get_weather", result.new_items


@cases.case
async def run_streamed_with_tool():
    result = Runner.run_streamed(agent("tools-one", tools=[get_weather]), "What is the weather in Paris?")
    kinds = set()
    async for event in result.stream_events():
        if event.type == "run_item_stream_event":
            kinds.add(event.item.type)
    assert {"tool_call_item", "tool_call_output_item", "message_output_item"} <= kinds, kinds
    assert "18C and sunny" in result.final_output, result.final_output


@cases.case
async def run_streamed_text():
    result = Runner.run_streamed(agent("plain"), "Say hello")
    deltas = []
    async for event in result.stream_events():
        if event.type == "raw_response_event" and event.data.type == "response.output_text.delta":
            deltas.append(event.data.delta)
    assert "".join(deltas) == expected and result.final_output == expected, (deltas, result.final_output)


@cases.case
async def previous_response_id():
    assistant = agent("plain")
    first = await Runner.run(assistant, "My name is Ada.")
    assert first.last_response_id, "the first run has no response id"
    second = await Runner.run(assistant, "What is my name?", previous_response_id=first.last_response_id)
    assert second.final_output == expected, second.final_output
    client = AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0)
    stored = await client.responses.retrieve(second.last_response_id)
    assert stored.previous_response_id == first.last_response_id, f"echoed as {stored.previous_response_id!r}"


@cases.case
async def output_type():
    result = await Runner.run(agent("json", output_type=Answer), "The answer?")
    assert result.final_output == Answer(answer=42), result.final_output


@cases.case
async def output_type_streamed():
    result = Runner.run_streamed(agent("json", output_type=Answer), "The answer?")
    async for _ in result.stream_events():
        pass
    assert result.final_output == Answer(answer=42), result.final_output


cases.finish()
