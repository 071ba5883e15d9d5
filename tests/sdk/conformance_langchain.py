"""Conformance of Mesh's /v1/responses with LangChain's `ChatOpenAI(use_responses_api=True)`,
unmodified (only base_url points at Mesh): invoke, stream, a tool round trip with `bind_tools`
and `with_structured_output` with a pydantic schema.

Usage: conformance_langchain.py BASE_URL API_KEY PREFIX EXPECTED_TEXT (see conformance_common.py)
"""
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from conformance_common import Cases, arguments

base_url, api_key, prefix, expected = arguments()
cases = Cases("langchain")


def llm(model, **options):
    return ChatOpenAI(model=f"{prefix}/{model}", base_url=base_url, api_key=api_key, max_retries=0,
                      use_responses_api=True, **options)


@tool
def get_weather(city: str) -> str:
    """Current weather in a city."""
    return "18C and sunny" if city == "Paris" else "unknown city"


class Answer(BaseModel):
    answer: int


@cases.case
def invoke():
    reply = llm("plain").invoke("Say hello")
    assert reply.text == expected, reply
    assert reply.usage_metadata["input_tokens"] > 0 and reply.usage_metadata["output_tokens"] > 0, reply.usage_metadata
    assert reply.response_metadata.get("id", "").startswith("resp_"), reply.response_metadata


@cases.case
def stream():
    chunks = list(llm("plain").stream("Say hello"))
    text = "".join(chunk.text for chunk in chunks)
    assert text == expected, text
    total = sum(chunks[1:], chunks[0])
    assert total.usage_metadata and total.usage_metadata["output_tokens"] > 0, total.usage_metadata


@cases.case
def tool_call():
    bound = llm("tools-one").bind_tools([get_weather])
    messages = [HumanMessage("What is the weather in Paris?")]
    call = bound.invoke(messages)
    assert call.tool_calls and call.tool_calls[0]["name"] == "get_weather", call
    assert call.tool_calls[0]["args"] == {"city": "Paris"}, call.tool_calls
    output = get_weather.invoke(call.tool_calls[0]["args"])
    messages += [call, ToolMessage(output, tool_call_id=call.tool_calls[0]["id"])]
    answer = bound.invoke(messages)
    assert "18C and sunny" in answer.text, answer


@cases.case
def tool_call_streamed():
    bound = llm("tools-one").bind_tools([get_weather])
    chunks = list(bound.stream("What is the weather in Paris?"))
    call = sum(chunks[1:], chunks[0])
    assert call.tool_calls and call.tool_calls[0]["args"] == {"city": "Paris"}, call.tool_calls


@cases.case
def structured_output():
    assert llm("json").with_structured_output(Answer).invoke("The answer?") == Answer(answer=42)


cases.finish()
