// Conformance of Mesh's /v1/responses with the official OpenAI Node SDK, unmodified (only baseURL
// points at Mesh): create, stream, `responses.stream()` + `finalResponse()` (the SDK's strict
// stream accumulator), retrieve, input items, errors and `previous_response_id`.
// Usage: node conformance_openai.mjs BASE_URL API_KEY PREFIX EXPECTED_TEXT
// (models PREFIX/plain, /tools-one, /json; see tests/sdk/conformance_common.py)
import OpenAI from "openai";
import { cases, check } from "./conformance_cases.mjs";

const [baseURL, apiKey, prefix, expected] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });
const [plain, toolsModel] = [`${prefix}/plain`, `${prefix}/tools-one`];
const weather = {
  type: "function",
  name: "get_weather",
  description: "Current weather in a city",
  parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"], additionalProperties: false },
  strict: true,
};
const textOf = (response) =>
  response.output
    .filter((item) => item.type === "message")
    .flatMap((item) => item.content)
    .filter((part) => part.type === "output_text")
    .map((part) => part.text)
    .join("");

async function rejects(promise, ErrorClass, code) {
  try {
    await promise;
  } catch (err) {
    check(err instanceof ErrorClass, `expected ${ErrorClass.name}, got ${err?.constructor?.name}: ${err?.message}`);
    check(err.code === code, `error code ${err.code}, expected ${code}`);
    check(err.message.includes(err.error?.message) && err.error.message.length > 0, `message: ${err.message}`);
    return err;
  }
  throw new Error(`no ${ErrorClass.name} was thrown`);
}

await cases("node-sdk", {
  async create() {
    const response = await client.responses.create({ model: plain, input: "Say hello" });
    check(response.output_text === expected, `output_text ${response.output_text}`);
    check(response.model === plain && response.usage.output_tokens > 0, JSON.stringify(response));
  },

  async stream() {
    const stream = await client.responses.create({ model: plain, input: "Say hello", stream: true });
    const events = [];
    for await (const event of stream) events.push(event);
    const text = events.filter((e) => e.type === "response.output_text.delta").map((e) => e.delta).join("");
    check(text === expected, `text ${text}`);
    check(events[0].type === "response.created", `first event ${events[0].type}`);
    check(events.at(-1).type === "response.completed", `last event ${events.at(-1).type}`);
  },

  async stream_helper() {
    const stream = client.responses.stream({ model: plain, input: "Say hello" });
    let text = "";
    stream.on("response.output_text.delta", (event) => (text += event.delta));
    const final = await stream.finalResponse();
    check(text === expected, `deltas ${text}`);
    check(textOf(final) === expected && final.model === plain, `finalResponse ${JSON.stringify(final)}`);
  },

  async stream_helper_tool_call() {
    const stream = client.responses.stream({ model: toolsModel, input: "Weather in Paris?", tools: [weather] });
    const final = await stream.finalResponse();
    const call = final.output.at(-1);
    check(call?.type === "function_call" && call.name === "get_weather" && call.call_id, JSON.stringify(final.output));
    check(JSON.parse(call.arguments).city === "Paris", call.arguments);
  },

  // A provider stream that breaks off: the SDK throws (an `error` event), or the stream ends
  // with `response.failed` carrying the error (facts 2.2).
  async stream_error() {
    const stream = await client.responses.create({ model: `${prefix}/stream-error`, input: "Tell me a story", stream: true });
    const seen = [];
    try {
      for await (const event of stream) seen.push(event);
    } catch (err) {
      check(err instanceof OpenAI.APIError && err.message, `${err?.constructor?.name}: ${err?.message}`);
      check(!seen.some((e) => e.type === "response.completed"), seen.map((e) => e.type).join(","));
      return;
    }
    const last = seen.at(-1);
    check(last?.type === "response.failed", `a broken stream ends with ${seen.map((e) => e.type).join(",")}`);
    check(last.response.status === "failed" && last.response.error?.message, JSON.stringify(last.response.error));
  },

  async stream_helper_error() {
    const stream = client.responses.stream({ model: `${prefix}/stream-error`, input: "Tell me a story" });
    let final;
    try {
      final = await stream.finalResponse();
    } catch (err) {
      check(err instanceof OpenAI.OpenAIError && err.message, `${err?.constructor?.name}: ${err?.message}`);
      return;
    }
    check(final.status === "failed" && final.error?.message, `finalResponse() of a broken stream: ${JSON.stringify(final)}`);
  },

  async retrieve() {
    const created = await client.responses.create({ model: plain, input: "Say hello" });
    const stored = await client.responses.retrieve(created.id);
    check(stored.id === created.id && stored.output_text === expected, JSON.stringify(stored));
  },

  async input_items() {
    const created = await client.responses.create({ model: plain, input: "Say hello" });
    const items = [];
    for await (const item of client.responses.inputItems.list(created.id)) items.push(item);
    check(items.length === 1, `${items.length} items`);
    const [item] = items;
    check(item.type === "message" && item.role === "user" && item.id, JSON.stringify(item));
    check(item.status === "completed", `status ${item.status}`);
    check(item.content[0]?.type === "input_text" && item.content[0].text === "Say hello", JSON.stringify(item.content));
  },

  async error_400() {
    const err = await rejects(
      client.responses.create({ model: plain, input: "Say hello", temperature: 3 }),
      OpenAI.BadRequestError,
      "invalid_value",
    );
    check(err.status === 400 && err.param === "temperature", `${err.status} ${err.param}`);
  },

  async error_404() {
    const missing = "resp_00000000000000000000000000";
    const err = await rejects(client.responses.retrieve(missing), OpenAI.NotFoundError, "response_not_found");
    check(err.message.includes(missing), err.message);
  },

  async previous_response_id() {
    const first = await client.responses.create({ model: plain, input: "My name is Ada." });
    const second = await client.responses.create({ model: plain, input: "What is my name?", previous_response_id: first.id });
    check(second.previous_response_id === first.id, `echoed as ${second.previous_response_id}`);
    const stream = client.responses.stream({ model: plain, input: "What is my name?", previous_response_id: first.id });
    const final = await stream.finalResponse();
    check(final.previous_response_id === first.id, `streamed: echoed as ${final.previous_response_id}`);
  },
});
