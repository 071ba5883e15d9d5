"""Drives Mesh's `/v1/chat/completions` with LangChain's default `ChatOpenAI`, unmodified (only
base_url points at Mesh): invoke, stream, a tool round trip with `bind_tools` and
`with_structured_output` with a Pydantic schema.

Usage: langchain_chat.py BASE_URL API_KEY PREFIX EXPECTED_TEXT (models PREFIX/plain, /tools-one, /json)
"""
import sys

from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

base_url, api_key, prefix, expected = sys.argv[1:5]


def llm(model, **options):
    return ChatOpenAI(model=f"{prefix}/{model}", base_url=base_url, api_key=api_key, max_retries=0, **options)


reply = llm("plain").invoke("Say hello")
assert reply.content == expected, reply
assert reply.usage_metadata["input_tokens"] > 0, reply.usage_metadata

# With a base URL other than OpenAI's, ChatOpenAI asks for streamed usage only when told to.
chunks = list(llm("plain").stream("Say hello"))
assert "".join(c.content for c in chunks) == expected, chunks
assert all(c.usage_metadata is None for c in chunks), "no usage unless asked"
chunks = list(llm("plain", stream_usage=True).stream("Say hello"))
assert "".join(c.content for c in chunks) == expected, chunks
assert sum((c.usage_metadata or {}).get("output_tokens", 0) for c in chunks) > 0, "streamed usage"


@tool
def get_weather(city: str) -> str:
    """Current weather in a city."""
    return "18C and sunny" if city == "Paris" else "unknown city"


bound = llm("tools-one").bind_tools([get_weather])
messages = [HumanMessage("What is the weather in Paris?")]
call = bound.invoke(messages)
assert call.tool_calls and call.tool_calls[0]["name"] == "get_weather", call
assert call.tool_calls[0]["args"] == {"city": "Paris"}, call.tool_calls
messages += [call, ToolMessage(get_weather.invoke(call.tool_calls[0]["args"]), tool_call_id=call.tool_calls[0]["id"])]
answer = bound.invoke(messages)
assert "18C and sunny" in answer.content, answer


class Answer(BaseModel):
    answer: int


assert llm("json").with_structured_output(Answer).invoke("The answer?") == Answer(answer=42)
print("langchain-ok")
