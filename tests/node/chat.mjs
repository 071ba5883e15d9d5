// Drives Mesh's /v1/chat/completions with the official OpenAI Node SDK, unmodified (only
// baseURL points at Mesh): create, stream: true (with and without include_usage), the
// chat.completions.stream helper, a tool round trip and chat.completions.parse with a schema.
// Usage: node chat.mjs BASE_URL API_KEY PREFIX EXPECTED_TEXT (models PREFIX/plain, /tools-one, /json)
import OpenAI from "openai";

const [baseURL, apiKey, prefix, expected] = process.argv.slice(2);
const [plain, toolsModel, jsonModel] = ["plain", "tools-one", "json"].map((m) => `${prefix}/${m}`);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });

function check(condition, message) {
  if (!condition) {
    console.error(message);
    process.exit(1);
  }
}

const hello = [{ role: "user", content: "Say hello" }];
const completion = await client.chat.completions.create({ model: plain, messages: hello });
check(completion.choices[0].message.content === expected, `create: ${JSON.stringify(completion)}`);
check(completion.model === plain && completion.id.startsWith("chatcmpl-"), `create ids: ${completion.model}`);
check(completion.usage.prompt_tokens > 0, `usage: ${JSON.stringify(completion.usage)}`);

let text = "";
let sawUsage = false;
for await (const chunk of await client.chat.completions.create({ model: plain, messages: hello, stream: true })) {
  text += chunk.choices[0]?.delta?.content ?? "";
  sawUsage ||= Boolean(chunk.usage);
}
check(text === expected && !sawUsage, `stream: ${text} (usage ${sawUsage})`);

let last;
for await (const chunk of await client.chat.completions.create({
  model: plain,
  messages: hello,
  stream: true,
  stream_options: { include_usage: true },
})) {
  last = chunk;
}
check(last.choices.length === 0 && last.usage.total_tokens > 0, `usage chunk: ${JSON.stringify(last)}`);

const runner = client.chat.completions.stream({ model: plain, messages: hello });
const final = await runner.finalChatCompletion();
check(final.choices[0].message.content === expected, `stream helper: ${JSON.stringify(final)}`);

const tools = [
  {
    type: "function",
    function: {
      name: "get_weather",
      description: "Current weather in a city",
      parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
    },
  },
];
const question = { role: "user", content: "What is the weather in Paris?" };
const first = await client.chat.completions.create({ model: toolsModel, messages: [question], tools });
const call = first.choices[0].message.tool_calls?.[0];
check(first.choices[0].finish_reason === "tool_calls" && call?.function.name === "get_weather", JSON.stringify(first));
check(JSON.parse(call.function.arguments).city === "Paris", call.function.arguments);
const second = await client.chat.completions.create({
  model: toolsModel,
  tools,
  messages: [question, first.choices[0].message, { role: "tool", tool_call_id: call.id, content: "18C and sunny" }],
});
check(second.choices[0].message.content.includes("18C and sunny"), JSON.stringify(second));

const parsed = await client.chat.completions.parse({
  model: jsonModel,
  messages: [{ role: "user", content: "The answer?" }],
  response_format: {
    type: "json_schema",
    json_schema: {
      name: "answer",
      strict: true,
      schema: { type: "object", properties: { answer: { type: "integer" } }, required: ["answer"], additionalProperties: false },
    },
  },
});
check(parsed.choices[0].message.parsed?.answer === 42, `parse: ${JSON.stringify(parsed.choices[0].message)}`);
console.log("node-chat-ok");
